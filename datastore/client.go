package datastore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/connectivity"
)

var (
	// ErrNotFound: the object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists: Create found the object already there.
	ErrAlreadyExists = errors.New("already exists")
	// ErrConflict: Update's resourceVersion is stale (someone wrote since).
	ErrConflict = errors.New("conflict: the object was modified since it was read")
)

// Config says how to reach etcd.
type Config struct {
	Endpoints []string
	// CAFile, CertFile, KeyFile enable TLS with a client certificate.
	CAFile, CertFile, KeyFile string
	DialTimeout               time.Duration
}

// Client reads and writes Calyx resources in etcd.
type Client struct {
	etcd *clientv3.Client
	owns bool
}

// NewClient connects to etcd. It does not wait for the connection; the
// first call does.
func NewClient(cfg Config) (*Client, error) {
	if len(cfg.Endpoints) == 0 {
		return nil, errors.New("no etcd endpoints given (--etcd-endpoints or CALYX_ETCD_ENDPOINTS)")
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	withTLS := cfg.CAFile != "" || cfg.CertFile != "" || cfg.KeyFile != ""
	if err := checkEndpointSchemes(cfg.Endpoints, withTLS); err != nil {
		return nil, err
	}
	var tlsCfg *tls.Config
	if withTLS {
		if (cfg.CertFile == "") != (cfg.KeyFile == "") {
			return nil, errors.New("etcd TLS: --etcd-cert and --etcd-key go together")
		}
		info := transport.TLSInfo{TrustedCAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		var err error
		if tlsCfg, err = info.ClientConfig(); err != nil {
			return nil, fmt.Errorf("etcd TLS: %w", err)
		}
	}
	if probe := tlsCfg; probe != nil || anyHTTPS(cfg.Endpoints) {
		if probe == nil {
			probe = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		ctx, cancel := context.WithTimeout(context.Background(), cfg.DialTimeout)
		err := probeTLS(ctx, cfg, probe)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		TLS:                  tlsCfg,
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		// etcd's client logs every retry at warn via zap; we report
		// failures ourselves.
		Logger: quietZap(),
	})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd %v: %w", cfg.Endpoints, err)
	}
	return &Client{etcd: c, owns: true}, nil
}

// NewClientFromEtcd wraps an existing etcd client; Close leaves it open.
func NewClientFromEtcd(c *clientv3.Client) *Client { return &Client{etcd: c} }

// Etcd is the underlying etcd client, for IPAM transactions and the syncer.
func (c *Client) Etcd() *clientv3.Client { return c.etcd }

// Reachable reports whether the connection to etcd is up, from the gRPC
// connection's state (kept current by keepalives and the agent's watch): no
// request is sent, so any number of callers may ask.
func (c *Client) Reachable() bool {
	switch c.etcd.ActiveConnection().GetState() {
	case connectivity.Ready, connectivity.Idle:
		return true
	}
	return false
}

// Close closes the etcd connection if this client opened it.
func (c *Client) Close() error {
	if c.owns {
		return c.etcd.Close()
	}
	return nil
}

func notFound(kind Kind, name string) error {
	return fmt.Errorf("%s %q: %w", kind, name, ErrNotFound)
}

// Get reads one object.
func (c *Client) Get(ctx context.Context, kind Kind, name string) (Resource, error) {
	resp, err := c.etcd.Get(ctx, Key(kind, name))
	if err != nil {
		return nil, fmt.Errorf("reading %s %q: %w", kind, name, err)
	}
	if len(resp.Kvs) == 0 {
		return nil, notFound(kind, name)
	}
	return decodeKV(kind, resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
}

func decodeKV(kind Kind, value []byte, modRev int64) (Resource, error) {
	r, err := Decode(kind, value)
	if err != nil {
		return nil, err
	}
	r.GetMeta().ResourceVersion = strconv.FormatInt(modRev, 10)
	return r, nil
}

// List reads every object of a kind, sorted by name, and the etcd revision
// the list was taken at.
func (c *Client) List(ctx context.Context, kind Kind) ([]Resource, int64, error) {
	resp, err := c.etcd.Get(ctx, KindPrefix(kind), clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil {
		return nil, 0, fmt.Errorf("listing %s: %w", kind.Plural(), err)
	}
	out := make([]Resource, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		r, err := decodeKV(kind, kv.Value, kv.ModRevision)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, resp.Header.Revision, nil
}

// Create writes a new object; ErrAlreadyExists if the name is taken.
func (c *Client) Create(ctx context.Context, r Resource) (Resource, error) {
	cond := clientv3.Compare(clientv3.Version(keyOf(r)), "=", 0)
	return c.write(ctx, r, &cond, ErrAlreadyExists)
}

// Update replaces an object only if it has not changed since it was read:
// r.GetMeta().ResourceVersion must be the revision it was read at.
func (c *Client) Update(ctx context.Context, r Resource) (Resource, error) {
	rv := r.GetMeta().ResourceVersion
	rev, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || rev <= 0 {
		return nil, fmt.Errorf("%s: update needs metadata.resourceVersion from a read (got %q)", Describe(r), rv)
	}
	cond := clientv3.Compare(clientv3.ModRevision(keyOf(r)), "=", rev)
	return c.write(ctx, r, &cond, ErrConflict)
}

// Apply creates the object or replaces it whatever its current version,
// keeping the original creation time.
func (c *Client) Apply(ctx context.Context, r Resource) (Resource, error) {
	for attempt := 0; ; attempt++ {
		cur, err := c.Get(ctx, r.GetKind(), r.GetMeta().Name)
		switch {
		case errors.Is(err, ErrNotFound):
			r.GetMeta().CreationTimestamp = ""
			out, err := c.Create(ctx, r)
			if errors.Is(err, ErrAlreadyExists) && attempt < 10 {
				continue
			}
			return out, err
		case err != nil:
			return nil, err
		}
		r.GetMeta().ResourceVersion = cur.GetMeta().ResourceVersion
		r.GetMeta().CreationTimestamp = cur.GetMeta().CreationTimestamp
		out, err := c.Update(ctx, r)
		if errors.Is(err, ErrConflict) && attempt < 10 {
			continue
		}
		return out, err
	}
}

// Put writes the object whatever is stored, in one round trip and without
// reading it first: for objects one writer owns, such as the
// WorkloadEndpoints an agent records on CNI ADD.
func (c *Client) Put(ctx context.Context, r Resource) (Resource, error) {
	return c.write(ctx, r, nil, nil)
}

func keyOf(r Resource) string { return Key(r.GetKind(), r.GetMeta().Name) }

func (c *Client) write(ctx context.Context, r Resource, cond *clientv3.Cmp, condErr error) (Resource, error) {
	if err := refuseRedacted(r); err != nil {
		return nil, err
	}
	m := r.GetMeta()
	if m.CreationTimestamp == "" {
		m.CreationTimestamp = time.Now().UTC().Format(time.RFC3339)
	}
	val, err := Encode(r)
	if err != nil {
		return nil, err
	}
	txn := c.etcd.Txn(ctx)
	if cond != nil {
		txn = txn.If(*cond)
	}
	resp, err := txn.Then(clientv3.OpPut(keyOf(r), string(val))).Commit()
	if err != nil {
		return nil, fmt.Errorf("writing %s: %w", Describe(r), err)
	}
	if !resp.Succeeded {
		return nil, fmt.Errorf("%s: %w", Describe(r), condErr)
	}
	m.ResourceVersion = strconv.FormatInt(resp.Header.Revision, 10)
	return r, nil
}

// Delete removes an object; ErrNotFound if it was not there.
func (c *Client) Delete(ctx context.Context, kind Kind, name string) error {
	resp, err := c.etcd.Delete(ctx, Key(kind, name))
	if err != nil {
		return fmt.Errorf("deleting %s %q: %w", kind, name, err)
	}
	if resp.Deleted == 0 {
		return notFound(kind, name)
	}
	return nil
}

// maxTxnOps is etcd's default limit on operations in one transaction.
const maxTxnOps = 128

// WriteMode says what WriteAll does with objects that exist.
type WriteMode int

const (
	// ModeApply creates or replaces.
	ModeApply WriteMode = iota
	// ModeCreate fails, writing nothing, if any object exists.
	ModeCreate
)

// WriteAll writes a set of validated resources in one etcd transaction, so
// that either all are written or none. Sets larger than etcd's transaction
// limit (128) are written in chunks of 128, each atomic. Before writing,
// new IPPools are checked against the pools already stored for overlaps.
func (c *Client) WriteAll(ctx context.Context, rs []Resource, mode WriteMode) error {
	if err := c.checkPoolsAgainstStored(ctx, rs); err != nil {
		return err
	}
	if err := c.checkFilterRefs(ctx, rs); err != nil {
		return err
	}
	for start := 0; start < len(rs); start += maxTxnOps {
		end := min(start+maxTxnOps, len(rs))
		if err := c.writeChunk(ctx, rs[start:end], mode); err != nil {
			return err
		}
	}
	return nil
}

func (c *Client) writeChunk(ctx context.Context, rs []Resource, mode WriteMode) error {
	now := time.Now().UTC().Format(time.RFC3339)
	var conds []clientv3.Cmp
	var ops []clientv3.Op
	keptSecrets := false
	for _, r := range rs {
		m := r.GetMeta()
		if mode == ModeCreate {
			conds = append(conds, clientv3.Compare(clientv3.Version(keyOf(r)), "=", 0))
		}
		if len(redactedFields(r)) > 0 {
			// "<redacted>" keeps the stored secret: read it, and write only
			// if it is still what was read.
			stored, err := c.Get(ctx, r.GetKind(), m.Name)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if err := keepRedacted(r, stored); err != nil {
				return err
			}
			rev, _ := strconv.ParseInt(stored.GetMeta().ResourceVersion, 10, 64)
			conds = append(conds, clientv3.Compare(clientv3.ModRevision(keyOf(r)), "=", rev))
			keptSecrets = true
		}
		if m.CreationTimestamp == "" {
			m.CreationTimestamp = now
		}
		val, err := Encode(r)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(keyOf(r), string(val)))
	}
	resp, err := c.etcd.Txn(ctx).If(conds...).Then(ops...).Commit()
	if err != nil {
		return fmt.Errorf("writing to etcd: %w", err)
	}
	if !resp.Succeeded {
		// Name the ones that exist so the user knows what to do.
		var taken []string
		for _, r := range rs {
			if _, err := c.Get(ctx, r.GetKind(), r.GetMeta().Name); err == nil {
				taken = append(taken, Describe(r))
			}
		}
		if mode == ModeCreate && len(taken) > 0 || !keptSecrets {
			return fmt.Errorf("%v: %w (use apply to replace)", taken, ErrAlreadyExists)
		}
		return fmt.Errorf("a resource whose stored secret was kept changed meanwhile: %w", ErrConflict)
	}
	return nil
}

// refuseRedacted stops the redaction marker from being stored as a secret.
func refuseRedacted(r Resource) error {
	if f := redactedFields(r); len(f) > 0 {
		return fmt.Errorf("%s: %s is %q, the marker calyxctl prints for a secret; give the value itself", Describe(r), strings.Join(f, ", "), Redacted)
	}
	return nil
}

func (c *Client) checkPoolsAgainstStored(ctx context.Context, rs []Resource) error {
	var incoming []*IPPool
	for _, r := range rs {
		if p, ok := r.(*IPPool); ok {
			incoming = append(incoming, p)
		}
	}
	if len(incoming) == 0 {
		return nil
	}
	stored, _, err := c.List(ctx, KindIPPool)
	if err != nil {
		return err
	}
	replaced := map[string]bool{}
	for _, p := range incoming {
		replaced[p.Metadata.Name] = true
	}
	// Stored pools first, so that the message names the new pool as the
	// one that overlaps.
	var all []*IPPool
	for _, r := range stored {
		if p := r.(*IPPool); !replaced[p.Metadata.Name] {
			all = append(all, p)
		}
	}
	return ValidatePools(append(all, incoming...))
}
