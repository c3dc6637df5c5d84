package policy

import (
	"slices"
	"strings"
	"sync"
)

// labelSet is an endpoint's labels packed into one string: for each label,
// sorted by key number, the key's number in two bytes (labelKeys), the
// value and a NUL. A pod's eight labels take ~100 bytes, where a map of
// them took ~550: with 100k endpoints of other nodes, labels were most of
// an agent's memory. Label values never hold a NUL
// (datastore.ValidateLabel). A lookup scans: endpoints carry a handful.
type labelSet string

// labelKeys numbers label keys for every labelSet of the process: a
// cluster uses a few dozen keys, repeated on every endpoint, so each is
// kept once. Numbers are never reused; should 65535 keys ever be taken,
// further keys are written out in the set (number 0, key, NUL).
var labelKeys = struct {
	sync.RWMutex
	ids map[string]uint16
}{ids: map[string]uint16{}}

const maxLabelKeys = 1<<16 - 1

// keyID is key's number; with add it is numbered if new. 0: none.
func keyID(key string, add bool) uint16 {
	labelKeys.RLock()
	id := labelKeys.ids[key]
	labelKeys.RUnlock()
	if id != 0 || !add {
		return id
	}
	labelKeys.Lock()
	defer labelKeys.Unlock()
	if id = labelKeys.ids[key]; id == 0 && len(labelKeys.ids) < maxLabelKeys {
		id = uint16(len(labelKeys.ids) + 1)
		labelKeys.ids[strings.Clone(key)] = id
	}
	return id
}

func packLabels(m map[string]string) labelSet {
	if len(m) == 0 {
		return ""
	}
	type entry struct {
		id       uint16
		key, val string
	}
	entries := make([]entry, 0, len(m))
	n := 0
	for k, v := range m {
		e := entry{keyID(k, true), k, v}
		entries = append(entries, e)
		n += 3 + len(v)
		if e.id == 0 {
			n += len(k) + 1
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if a.id != b.id {
			return int(a.id) - int(b.id)
		}
		return strings.Compare(a.key, b.key)
	})
	var b strings.Builder
	b.Grow(n)
	for _, e := range entries {
		b.WriteByte(byte(e.id >> 8))
		b.WriteByte(byte(e.id))
		if e.id == 0 {
			b.WriteString(e.key)
			b.WriteByte(0)
		}
		b.WriteString(e.val)
		b.WriteByte(0)
	}
	return labelSet(b.String())
}

// get returns the value of key and whether it is there.
func (l labelSet) get(key string) (string, bool) {
	id := keyID(key, false)
	s := string(l)
	for len(s) >= 3 {
		eid := uint16(s[0])<<8 | uint16(s[1])
		s = s[2:]
		k := ""
		if eid == 0 {
			k, s, _ = strings.Cut(s, "\x00")
		}
		v, rest, _ := strings.Cut(s, "\x00")
		switch {
		case eid == 0 && k == key:
			return v, true
		case eid != 0 && eid == id:
			return v, true
		case eid != 0 && (id == 0 || eid > id):
			return "", false // sorted by number (written-out keys first): not further on
		}
		s = rest
	}
	return "", false
}
