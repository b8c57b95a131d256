package broker

import (
	"context"
	"log/slog"
)

// quietHandler raises the floor of a handler: Mochi logs every hook and
// listener it adds at INFO, which is noise in Umbra's output, so its
// records below WARN are kept only when the logger is at DEBUG.
type quietHandler struct {
	slog.Handler
	floor slog.Level
}

func quiet(l *slog.Logger, floor slog.Level) *slog.Logger {
	if l.Enabled(context.Background(), slog.LevelDebug) {
		return l
	}
	return slog.New(quietHandler{l.Handler(), floor})
}

func (h quietHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= h.floor && h.Handler.Enabled(ctx, lv)
}

func (h quietHandler) WithAttrs(a []slog.Attr) slog.Handler {
	return quietHandler{h.Handler.WithAttrs(a), h.floor}
}

func (h quietHandler) WithGroup(n string) slog.Handler {
	return quietHandler{h.Handler.WithGroup(n), h.floor}
}
