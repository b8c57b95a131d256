// Package artifact stores firmware images for OTA updates: content-
// addressed files in the data directory (artifacts/<sha256>), their
// metadata in the store, optional signature verification on upload, and
// the short-lived per-device download tokens devices find in their desired
// state.
//
// An upload streams to a temporary file while its SHA-256 is computed; the
// file is fsynced and renamed to its content address (and the directory
// fsynced) before the metadata is committed, and the metadata is committed
// before the upload is acknowledged: an acknowledged artifact survives a
// crash. A crash between rename and commit leaves an orphan file that the
// next upload of the same content reuses.
//
// Signatures sign the image's SHA-256 digest: ECDSA P-256 signatures are
// ASN.1 DER over the digest (what `openssl dgst -sha256 -sign key.pem`
// writes), Ed25519 signatures sign the 32 digest bytes. A device that holds
// the public key checks the digest of what it downloaded, then the
// signature over that digest, before it boots the image.
package artifact

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// KV is a transaction over named buckets (the store's).
type KV interface {
	Get(bucket, key string) []byte
	Put(bucket, key string, value []byte) error
	Delete(bucket, key string) error
	ForEach(bucket, prefix string, fn func(key string, value []byte) error) error
}

// Store is the metadata storage: UpdateKV returns once durable.
type Store interface {
	UpdateKV(ctx context.Context, fn func(KV) error) error
	ViewKV(fn func(KV) error) error
}

const (
	bucketArtifacts = "artifacts"      // id → Artifact JSON
	bucketMeta      = "artifacts_meta" // "token_key" → 32 random bytes
	keyTokenKey     = "token_key"
)

// Artifact is a stored firmware image's metadata. ID is the hex SHA-256 of
// the content.
type Artifact struct {
	ID         string `json:"id"`
	SHA256     string `json:"sha256"`
	Size       int64  `json:"size"`
	Version    string `json:"version"`
	Type       string `json:"type"`       // device (thing) type, e.g. esp32
	UploadedAt int64  `json:"uploadedAt"` // Unix ms
	Uploader   string `json:"uploader"`
	// Signature (base64 in JSON) and the algorithm that verified it
	// (ecdsa-p256 or ed25519); empty when uploaded unsigned.
	Signature []byte `json:"signature,omitempty"`
	SigAlg    string `json:"signatureAlgorithm,omitempty"`
}

// Ref is "<type>@<version>", the name a rollout may use instead of the id.
func (a Artifact) Ref() string { return a.Type + "@" + a.Version }

// Errors.
var (
	ErrNotFound = errors.New("artifact not found")
	// ErrInUse: a rollout or job references the artifact.
	ErrInUse = errors.New("artifact in use")
	// ErrExists: another image has this type and version.
	ErrExists = errors.New("artifact exists")
	// ErrToken: a download token that is missing, expired, or not for
	// this artifact and thing.
	ErrToken = errors.New("download not authorised")
)

// InvalidError is bad upload input (HTTP 400 / 422): a bad field, a
// checksum or signature that does not match.
type InvalidError struct {
	Field string
	Msg   string
}

func (e *InvalidError) Error() string { return e.Msg }

// Config assembles a Service.
type Config struct {
	Dir   string // where the blobs live (created)
	Store Store
	// PublicKey, when set, is the ECDSA P-256 or Ed25519 public key every
	// upload's signature must verify with (uploads without one are
	// refused). Unset: signatures are optional and not checked.
	PublicKey any
	// TokenTTL is how long a device download URL is valid (default 24h).
	TokenTTL time.Duration
	// InUse, when set, names what references an artifact (rollout and job
	// ids); Delete refuses while it names anything.
	InUse func(id string) []string
	// Exclusive, when set, is held by Delete across the InUse check and
	// the deletion, so that nothing can start referencing the artifact in
	// between (the broker pairs it with rollout.ReferenceHolder).
	Exclusive func() (release func())
	Clock     func() time.Time
	// MaxSize caps an upload (default 64 MiB).
	MaxSize int64
	// Blobs, when set, is a shared copy of every image (cluster mode: a
	// JetStream object store). Put stores the image there before its
	// metadata is committed; Open fetches an image missing from Dir from
	// there (checking its SHA-256) and keeps it in Dir; Delete removes it.
	Blobs Blobs
}

// Blobs is a shared store of images by id (the hex SHA-256).
type Blobs interface {
	Put(ctx context.Context, id string, content io.Reader) error
	// Get writes the image to w; an error wrapping os.ErrNotExist when
	// there is none.
	Get(ctx context.Context, id string, w io.Writer) error
	Delete(ctx context.Context, id string) error // no error when absent
}

// blobTimeout bounds fetching an image from Config.Blobs in Open.
const blobTimeout = 5 * time.Minute

// Service is the artifact store.
type Service struct {
	cfg Config
	key []byte // token HMAC key
	mu  sync.Mutex
}

// DefaultTokenTTL is the default lifetime of a device download URL.
const DefaultTokenTTL = 24 * time.Hour

// DefaultMaxSize caps an upload.
const DefaultMaxSize = 64 << 20

// Open creates the blob directory and loads (or creates, durably) the
// token key.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = DefaultTokenTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	switch k := cfg.PublicKey.(type) {
	case nil, ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, errors.New("artifact signing key: ECDSA keys must be on P-256")
		}
	default:
		return nil, fmt.Errorf("artifact signing key: %T is neither ECDSA P-256 nor Ed25519", cfg.PublicKey)
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "tmp"), 0o700); err != nil {
		return nil, fmt.Errorf("artifact directory: %w", err)
	}
	s := &Service{cfg: cfg}
	err := cfg.Store.ViewKV(func(kv KV) error { s.key = kv.Get(bucketMeta, keyTokenKey); return nil })
	if err != nil {
		return nil, err
	}
	if len(s.key) != 32 {
		key := make([]byte, 32)
		_, _ = rand.Read(key)
		if err := cfg.Store.UpdateKV(ctx, func(kv KV) error {
			if k := kv.Get(bucketMeta, keyTokenKey); len(k) == 32 {
				key = k
				return nil
			}
			return kv.Put(bucketMeta, keyTokenKey, key)
		}); err != nil {
			return nil, err
		}
		s.key = key
	}
	// Temporary files of uploads a crash interrupted.
	if ents, err := os.ReadDir(filepath.Join(cfg.Dir, "tmp")); err == nil {
		for _, e := range ents {
			_ = os.Remove(filepath.Join(cfg.Dir, "tmp", e.Name()))
		}
	}
	return s, nil
}

// ParsePublicKey reads a PEM "PUBLIC KEY" (PKIX) holding an ECDSA P-256 or
// Ed25519 key.
func ParsePublicKey(pemBytes []byte) (any, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil {
		return nil, errors.New("no PEM block (want -----BEGIN PUBLIC KEY-----)")
	}
	k, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a PKIX public key: %w", err)
	}
	switch k := k.(type) {
	case ed25519.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s: want P-256", k.Curve.Params().Name)
		}
		return k, nil
	}
	return nil, fmt.Errorf("%T: want an ECDSA P-256 or Ed25519 public key", k)
}

// Upload is what an upload declares besides its content.
type Upload struct {
	Version  string
	Type     string
	Uploader string
	// SHA256, when set (hex), is what the uploader computed: content with
	// another digest (corrupted or tampered in transit) is refused.
	SHA256 string
	// Signature over the content's SHA-256 digest (see the package doc).
	Signature []byte
}

var (
	versionRe = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+-]{0,63}$`)
	typeRe    = regexp.MustCompile(`^[A-Za-z0-9:_-]{1,128}$`)
	idRe      = regexp.MustCompile(`^[0-9a-f]{64}$`)
)

// Put stores content (read once, streamed to disk) under its SHA-256. The
// same content uploaded again with the same type and version returns the
// stored artifact and created=false.
func (s *Service) Put(ctx context.Context, content io.Reader, u Upload) (a Artifact, created bool, err error) {
	if !versionRe.MatchString(u.Version) {
		return a, false, &InvalidError{"version", fmt.Sprintf("invalid version %q: want 1-64 of letters, digits and ._+- (e.g. 1.2.0)", u.Version)}
	}
	if !typeRe.MatchString(u.Type) {
		return a, false, &InvalidError{"type", fmt.Sprintf("invalid device type %q: want 1-128 of letters, digits and :_- (e.g. esp32)", u.Type)}
	}
	u.SHA256 = strings.ToLower(u.SHA256)
	if u.SHA256 != "" && !idRe.MatchString(u.SHA256) {
		return a, false, &InvalidError{"sha256", fmt.Sprintf("declared SHA-256 %q is not 64 hex digits", u.SHA256)}
	}
	if s.cfg.PublicKey != nil && len(u.Signature) == 0 {
		return a, false, &InvalidError{"signature", "this server verifies firmware signatures: the upload needs a signature over the image's SHA-256 (X-Umbra-Signature header, base64)"}
	}
	tmp, err := os.CreateTemp(filepath.Join(s.cfg.Dir, "tmp"), "upload-*")
	if err != nil {
		return a, false, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(content, s.cfg.MaxSize+1))
	if err != nil {
		return a, false, fmt.Errorf("reading the upload: %w", err)
	}
	if n > s.cfg.MaxSize {
		return a, false, &InvalidError{"size", fmt.Sprintf("the image is larger than the %d-byte limit", s.cfg.MaxSize)}
	}
	if n == 0 {
		return a, false, &InvalidError{"size", "the image is empty"}
	}
	digest := h.Sum(nil)
	id := hex.EncodeToString(digest)
	if u.SHA256 != "" && u.SHA256 != id {
		return a, false, &InvalidError{"sha256", fmt.Sprintf("content SHA-256 %s does not match the declared %s: the image was changed or truncated in transit (%d bytes received)", id, u.SHA256, n)}
	}
	alg := ""
	if len(u.Signature) > 0 {
		if alg, err = s.verify(digest, u.Signature); err != nil {
			return a, false, err
		}
	}
	if err := tmp.Sync(); err != nil {
		return a, false, err
	}
	if err := tmp.Close(); err != nil {
		return a, false, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// look up what is stored: in Put's transaction below again, so that
	// two nodes of a cluster cannot store one version twice
	check := func(kv KV) (*Artifact, error) {
		var existing, sameRef *Artifact
		if b := kv.Get(bucketArtifacts, id); b != nil {
			existing = new(Artifact)
			if err := json.Unmarshal(b, existing); err != nil {
				return nil, err
			}
		}
		if err := kv.ForEach(bucketArtifacts, "", func(_ string, v []byte) error {
			var o Artifact
			if json.Unmarshal(v, &o) == nil && o.Type == u.Type && o.Version == u.Version {
				sameRef = &o
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if existing != nil {
			if existing.Type == u.Type && existing.Version == u.Version {
				return existing, nil
			}
			return nil, fmt.Errorf("%w: this image is already stored as %s (artifact %s)", ErrExists, existing.Ref(), id)
		}
		if sameRef != nil {
			return nil, fmt.Errorf("%w: %s is already another image (artifact %s); versions are immutable, push a new version", ErrExists, sameRef.Ref(), sameRef.ID)
		}
		return nil, nil
	}
	var same *Artifact
	if err := s.cfg.Store.ViewKV(func(kv KV) (err error) { same, err = check(kv); return err }); err != nil {
		return a, false, err
	}
	if same != nil {
		return *same, false, nil
	}
	if s.cfg.Blobs != nil {
		f, err := os.Open(tmp.Name())
		if err != nil {
			return a, false, err
		}
		err = s.cfg.Blobs.Put(ctx, id, f)
		f.Close()
		if err != nil {
			return a, false, fmt.Errorf("artifact %s: shared copy: %w", id, err)
		}
	}
	if err := os.Rename(tmp.Name(), s.path(id)); err != nil {
		return a, false, err
	}
	tmp = nil
	if err := syncDir(s.cfg.Dir); err != nil {
		return a, false, err
	}
	a = Artifact{ID: id, SHA256: id, Size: n, Version: u.Version, Type: u.Type, UploadedAt: s.cfg.Clock().UnixMilli(),
		Uploader: u.Uploader, Signature: u.Signature, SigAlg: alg}
	b, _ := json.Marshal(a)
	if err := s.cfg.Store.UpdateKV(ctx, func(kv KV) error {
		if same, err = check(kv); err != nil || same != nil {
			return err
		}
		return kv.Put(bucketArtifacts, id, b)
	}); err != nil {
		return Artifact{}, false, err
	}
	if same != nil { // stored meanwhile (another node of a cluster)
		return *same, false, nil
	}
	return a, true, nil
}

func (s *Service) verify(digest, sig []byte) (string, error) {
	switch k := s.cfg.PublicKey.(type) {
	case nil:
		// No key configured: the signature is kept and served, unchecked.
		return "", nil
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, sig) {
			return "", &InvalidError{"signature", "the signature does not verify with the configured ECDSA P-256 key over the image's SHA-256 " + hex.EncodeToString(digest) + ": the image was tampered with, or signed with another key"}
		}
		return "ecdsa-p256", nil
	case ed25519.PublicKey:
		if !ed25519.Verify(k, digest, sig) {
			return "", &InvalidError{"signature", "the signature does not verify with the configured Ed25519 key over the image's SHA-256 " + hex.EncodeToString(digest) + ": the image was tampered with, or signed with another key"}
		}
		return "ed25519", nil
	}
	return "", errors.New("unsupported key")
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *Service) path(id string) string { return filepath.Join(s.cfg.Dir, id) }

// Get returns an artifact by id, unique id prefix (at least 8 digits) or
// "<type>@<version>".
func (s *Service) Get(ref string) (Artifact, error) {
	var found []Artifact
	err := s.cfg.Store.ViewKV(func(kv KV) error {
		if idRe.MatchString(ref) {
			if b := kv.Get(bucketArtifacts, ref); b != nil {
				var a Artifact
				if err := json.Unmarshal(b, &a); err != nil {
					return err
				}
				found = append(found, a)
			}
			return nil
		}
		return kv.ForEach(bucketArtifacts, "", func(id string, v []byte) error {
			var a Artifact
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			if a.Ref() == ref || len(ref) >= 8 && strings.HasPrefix(id, ref) {
				found = append(found, a)
			}
			return nil
		})
	})
	if err != nil {
		return Artifact{}, err
	}
	switch len(found) {
	case 0:
		return Artifact{}, fmt.Errorf("%w: %q (give an id, an id prefix of 8+ digits, or type@version)", ErrNotFound, ref)
	case 1:
		return found[0], nil
	}
	return Artifact{}, fmt.Errorf("%w: %q is ambiguous (%d artifacts)", ErrNotFound, ref, len(found))
}

// List returns every artifact, newest first.
func (s *Service) List() ([]Artifact, error) {
	out := []Artifact{}
	err := s.cfg.Store.ViewKV(func(kv KV) error {
		return kv.ForEach(bucketArtifacts, "", func(_ string, v []byte) error {
			var a Artifact
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].UploadedAt > out[j].UploadedAt })
	return out, err
}

// InUseError names what references an artifact.
type InUseError struct {
	Artifact Artifact
	By       []string
}

func (e *InUseError) Error() string {
	return fmt.Sprintf("artifact %s (%s) is referenced by %s; cancel or finish them first", e.Artifact.ID, e.Artifact.Ref(), strings.Join(e.By, ", "))
}

func (e *InUseError) Unwrap() error { return ErrInUse }

// Delete removes an artifact that nothing references: its metadata
// (durably), then its file.
func (s *Service) Delete(ctx context.Context, ref string) (Artifact, error) {
	a, err := s.Get(ref)
	if err != nil {
		return a, err
	}
	if s.cfg.Exclusive != nil {
		defer s.cfg.Exclusive()()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.InUse != nil {
		if by := s.cfg.InUse(a.ID); len(by) > 0 {
			return a, &InUseError{Artifact: a, By: by}
		}
	}
	if err := s.cfg.Store.UpdateKV(ctx, func(kv KV) error { return kv.Delete(bucketArtifacts, a.ID) }); err != nil {
		return a, err
	}
	if err := os.Remove(s.path(a.ID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return a, err
	}
	if s.cfg.Blobs != nil {
		if err := s.cfg.Blobs.Delete(ctx, a.ID); err != nil {
			return a, fmt.Errorf("artifact %s: shared copy: %w", a.ID, err)
		}
	}
	return a, nil
}

// Open opens an artifact's content for reading.
func (s *Service) Open(id string) (*os.File, Artifact, error) {
	a, err := s.Get(id)
	if err != nil {
		return nil, a, err
	}
	f, err := os.Open(s.path(a.ID))
	if errors.Is(err, os.ErrNotExist) && s.cfg.Blobs != nil {
		if err = s.fetch(a.ID); err == nil {
			f, err = os.Open(s.path(a.ID))
		}
	}
	if err != nil {
		return nil, a, fmt.Errorf("artifact %s: content missing: %w", a.ID, err)
	}
	return f, a, nil
}

// fetch copies an image from Config.Blobs into Dir, checking its SHA-256.
func (s *Service) fetch(id string) error {
	ctx, cancel := context.WithTimeout(context.Background(), blobTimeout)
	defer cancel()
	tmp, err := os.CreateTemp(filepath.Join(s.cfg.Dir, "tmp"), "fetch-*")
	if err != nil {
		return err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	if err := s.cfg.Blobs.Get(ctx, id, io.MultiWriter(tmp, h)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != id {
		return fmt.Errorf("shared copy has SHA-256 %s", got)
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), s.path(id)); err != nil {
		return err
	}
	tmp = nil
	return nil
}

// TokenTTL is how long a download URL stays valid.
func (s *Service) TokenTTL() time.Duration { return s.cfg.TokenTTL }

// Token returns the download token of thing for artifact id, valid until
// expires: hex HMAC-SHA256(key, id, thing, expires).
func (s *Service) Token(id, thing string, expires int64) string {
	m := hmac.New(sha256.New, s.key)
	fmt.Fprintf(m, "umbra-artifact\x00%s\x00%s\x00%d", id, thing, expires)
	return hex.EncodeToString(m.Sum(nil))
}

// Authorize checks a device's download token.
func (s *Service) Authorize(id, thing, expires, token string) error {
	if thing == "" || expires == "" || token == "" {
		return fmt.Errorf("%w: the download URL needs thing, expires and token (take it from the device's desired ota_url)", ErrToken)
	}
	exp, err := strconv.ParseInt(expires, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: expires %q is not a Unix time", ErrToken, expires)
	}
	if !hmac.Equal([]byte(s.Token(id, thing, exp)), []byte(strings.ToLower(token))) {
		return fmt.Errorf("%w: the token is not valid for artifact %s and thing %q", ErrToken, id, thing)
	}
	if now := s.cfg.Clock().Unix(); now > exp {
		return fmt.Errorf("%w: the token expired at %s (%s ago)", ErrToken, time.Unix(exp, 0).UTC().Format(time.RFC3339), time.Duration(now-exp)*time.Second)
	}
	return nil
}

// DownloadPath is the path (with query) of thing's download URL for
// artifact id, valid for the configured TTL from now.
func (s *Service) DownloadPath(id, thing string) string {
	exp := s.cfg.Clock().Add(s.cfg.TokenTTL).Unix()
	return fmt.Sprintf("/firmware/%s?thing=%s&expires=%d&token=%s", id, queryEscape(thing), exp, s.Token(id, thing, exp))
}

// thing names are [A-Za-z0-9:_-]; escape anything else anyway.
func queryEscape(s string) string {
	var b strings.Builder
	for _, c := range []byte(s) {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
