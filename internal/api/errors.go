package api

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/umbra-iot/umbra/shadow"
)

// awsErrorTypes maps a status to the AWS rest-json exception name, which
// AWS SDKs read from the X-Amzn-ErrorType header.
var awsErrorTypes = map[int]string{
	400: "InvalidRequestException",
	401: "UnauthorizedException",
	403: "ForbiddenException",
	404: "ResourceNotFoundException",
	405: "MethodNotAllowedException",
	409: "ConflictException",
	413: "RequestEntityTooLargeException",
	415: "UnsupportedDocumentEncodingException",
	429: "ThrottlingException",
	500: "InternalFailureException",
	503: "ServiceUnavailableException",
}

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// writeRaw writes an already-encoded JSON body.
func writeRaw(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	if t, ok := awsErrorTypes[status]; ok && status >= 400 {
		w.Header().Set("X-Amzn-ErrorType", t)
	}
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError answers with the shadow error document ({"code","message",
// "timestamp"}), the same shape MQTT clients get on /rejected.
func writeError(w http.ResponseWriter, err *shadow.Error) {
	writeRaw(w, err.Code, shadow.Rejected(err, "", false, time.Now()))
}

func badRequest(msg string) *shadow.Error { return &shadow.Error{Code: 400, Message: msg} }

func nowUnix() int64 { return time.Now().Unix() }
