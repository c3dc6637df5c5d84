package benchkit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// A binary that is not executable is as missing as an absent one: the lab
// could not exec it.
func TestMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	if got := MissingBinaries(dir); !slices.Equal(got, Binaries) {
		t.Errorf("empty dir: missing %v, want %v", got, Binaries)
	}
	for i, b := range Binaries {
		mode := os.FileMode(0o755)
		if i == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), mode); err != nil {
			t.Fatal(err)
		}
	}
	if got := MissingBinaries(dir); !slices.Equal(got, Binaries[:1]) {
		t.Errorf("first not executable: missing %v, want %v", got, Binaries[:1])
	}
}

// With every binary in CALYX_BIN_DIR, BinDir returns it (absolute) and
// builds nothing.
func TestBinDirUsesTheEnvironment(t *testing.T) {
	dir := t.TempDir()
	for _, b := range Binaries {
		if err := os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Chdir(dir)
	t.Setenv("CALYX_BIN_DIR", ".")
	got, err := BinDir(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := filepath.Abs("."); got != want {
		t.Errorf("BinDir = %s, want %s", got, want)
	}
	if exp, err := ExpectedBinDir(); err != nil || exp != got {
		t.Errorf("ExpectedBinDir = %s, %v; want %s", exp, err, got)
	}
}

// Outside the module and without CALYX_BIN_DIR there is nothing to find
// or build from.
func TestBinDirOutsideTheModule(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("CALYX_BIN_DIR", "")
	if _, err := BinDir(context.Background(), slog.New(slog.DiscardHandler)); err == nil {
		t.Error("BinDir outside the module without CALYX_BIN_DIR: no error")
	}
}
