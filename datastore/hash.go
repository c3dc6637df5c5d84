package datastore

import (
	"crypto/sha256"
	"encoding/hex"
)

// shortHash is a stable 10-hex-character digest used to keep derived names
// unique and short.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:5])
}
