package main

import (
	"context"
	"errors"
	"io"

	"github.com/spf13/pflag"
)

func ipamFlags(fs *pflag.FlagSet) {}

func runIPAM(ctx context.Context, g *globals, fs *pflag.FlagSet, args []string, _ io.Reader, out io.Writer) error {
	return errors.New("ipam: not built yet")
}
