// Package relay is how the calyx CNI binary hands a CNI invocation to
// calyx-agent: the binary sends its CNI_* environment and stdin, as it got
// them, over the agent socket; the agent runs the CNI protocol (the checks
// skel makes, config parsing, the verb, the versioned result) and sends back
// what the binary prints and its exit status.
//
// A runtime execs the plugin for every verb, so the binary's start-up is on
// the critical path of every ADD: this package, and so the binary, uses the
// standard library only (no gRPC, no protobuf, no CNI library). The agent
// tells a relay connection from a gRPC one (calyxctl) by its first bytes
// (cni/server), so both share the one socket.
//
// Wire format, after Magic, all integers big-endian uint32:
//
//	request: count, then count × (len, "KEY=VALUE"), then len, stdin
//	reply:   Magic, status (0 success, 1 failure), len, stdout, len, stderr
package relay

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Magic starts every relay request and reply. A gRPC client starts with
// the HTTP/2 preface ("PRI * HTTP/2.0"), so the first bytes tell them apart.
const Magic = "CALYXCNI/1\n"

// Limits keep a broken or hostile peer from making the other side allocate
// without bound.
const (
	MaxEnv      = 64       // environment entries in a request
	MaxEnvEntry = 64 << 10 // bytes of one KEY=VALUE
	MaxPayload  = 16 << 20 // bytes of stdin, of stdout and of stderr
)

// ErrNotRelay means the peer did not start with Magic: an agent too old to
// speak the relay protocol (it speaks gRPC only), or something else.
var ErrNotRelay = errors.New("the peer does not speak the calyx relay protocol")

// Request is one plugin invocation.
type Request struct {
	// Env holds the CNI_* variables the plugin was given.
	Env map[string]string
	// Stdin is the network configuration, byte for byte.
	Stdin []byte
}

// Getenv returns the value of key, "" when unset.
func (r *Request) Getenv(key string) string { return r.Env[key] }

// Reply is what the plugin prints: Stdout (the CNI result, or the CNI
// error JSON when Failed) and Stderr, and whether it exits 1.
type Reply struct {
	Failed bool
	Stdout []byte
	Stderr []byte
}

// WriteRequest writes req, Magic first.
func WriteRequest(w io.Writer, req *Request) error {
	if len(req.Env) > MaxEnv {
		return fmt.Errorf("relay request: %d environment entries, at most %d", len(req.Env), MaxEnv)
	}
	var b bytes.Buffer
	b.WriteString(Magic)
	putUint(&b, len(req.Env))
	for k, v := range req.Env {
		if err := putField(&b, []byte(k+"="+v), MaxEnvEntry); err != nil {
			return fmt.Errorf("relay request: %s: %w", k, err)
		}
	}
	if err := putField(&b, req.Stdin, MaxPayload); err != nil {
		return fmt.Errorf("relay request: stdin: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ReadRequest reads a request whose Magic the caller has already consumed
// (the agent peeks at it to choose the protocol).
func ReadRequest(r io.Reader) (*Request, error) {
	br := bufio.NewReader(r)
	n, err := getUint(br)
	if err != nil {
		return nil, fmt.Errorf("relay request: %w", err)
	}
	if n > MaxEnv {
		return nil, fmt.Errorf("relay request: %d environment entries, at most %d", n, MaxEnv)
	}
	req := &Request{Env: make(map[string]string, n)}
	for range n {
		kv, err := getField(br, MaxEnvEntry)
		if err != nil {
			return nil, fmt.Errorf("relay request: environment: %w", err)
		}
		k, v, ok := strings.Cut(string(kv), "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("relay request: environment entry %q is not KEY=VALUE", kv)
		}
		req.Env[k] = v
	}
	if req.Stdin, err = getField(br, MaxPayload); err != nil {
		return nil, fmt.Errorf("relay request: stdin: %w", err)
	}
	return req, nil
}

// WriteReply writes rep, Magic first.
func WriteReply(w io.Writer, rep *Reply) error {
	var b bytes.Buffer
	b.WriteString(Magic)
	status := 0
	if rep.Failed {
		status = 1
	}
	putUint(&b, status)
	if err := putField(&b, rep.Stdout, MaxPayload); err != nil {
		return fmt.Errorf("relay reply: stdout: %w", err)
	}
	if err := putField(&b, rep.Stderr, MaxPayload); err != nil {
		return fmt.Errorf("relay reply: stderr: %w", err)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ReadReply reads a reply, Magic included; ErrNotRelay when the peer
// answered something else.
func ReadReply(r io.Reader) (*Reply, error) {
	br := bufio.NewReader(r)
	magic := make([]byte, len(Magic))
	n, err := io.ReadFull(br, magic)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("%w (it closed the connection after %d bytes: %q)", ErrNotRelay, n, magic[:n])
	case err != nil:
		return nil, err
	case string(magic) != Magic:
		return nil, fmt.Errorf("%w (it answered %q)", ErrNotRelay, magic)
	}
	status, err := getUint(br)
	if err != nil {
		return nil, fmt.Errorf("relay reply: %w", err)
	}
	rep := &Reply{Failed: status != 0}
	if rep.Stdout, err = getField(br, MaxPayload); err != nil {
		return nil, fmt.Errorf("relay reply: stdout: %w", err)
	}
	if rep.Stderr, err = getField(br, MaxPayload); err != nil {
		return nil, fmt.Errorf("relay reply: stderr: %w", err)
	}
	return rep, nil
}

func putUint(b *bytes.Buffer, n int) {
	b.Write(binary.BigEndian.AppendUint32(nil, uint32(n)))
}

func putField(b *bytes.Buffer, data []byte, limit int) error {
	if len(data) > limit {
		return fmt.Errorf("%d bytes, at most %d", len(data), limit)
	}
	putUint(b, len(data))
	b.Write(data)
	return nil
}

func getUint(r io.Reader) (int, error) {
	var buf [4]byte
	if _, err := io.ReadFull(r, buf[:]); err != nil {
		return 0, fmt.Errorf("truncated: %w", err)
	}
	return int(binary.BigEndian.Uint32(buf[:])), nil
}

func getField(r io.Reader, limit int) ([]byte, error) {
	n, err := getUint(r)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("%d bytes, at most %d", n, limit)
	}
	data := make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, fmt.Errorf("truncated: %w", err)
	}
	return data, nil
}
