package query

import "fmt"

// SyntaxError is every error Parse returns. Pos is the byte offset in the
// query the message is about; Msg says what was expected or what is wrong.
type SyntaxError struct {
	Pos int
	Msg string
}

// Error reports the position as a 1-based column.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("query: position %d: %s", e.Pos+1, e.Msg)
}
