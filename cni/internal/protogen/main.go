// Command protogen regenerates the Go code for the calyx gRPC API without
// protoc: it compiles the .proto files with protocompile, hands the plugins
// protoc-gen-go and protoc-gen-go-grpc (declared as tools in go.mod, run via
// `go tool`) the same CodeGeneratorRequest protoc would, and writes what they
// answer.
//
// Usage, from anywhere in the module (`make generate` runs this):
//
//	go run ./cni/internal/protogen [-out DIR] [file.proto ...]
//
// Paths of .proto files are relative to the module root, which is also the
// only import path. The default file list is the calyx API.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
)

// defaultProtos are the files `make generate` compiles.
var defaultProtos = []string{"cni/api/calyx.proto"}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "protogen:", err)
		os.Exit(1)
	}
}

func run() error {
	out := flag.String("out", "", "directory to write generated files into (default: the module root)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	root, err := moduleRoot()
	if err != nil {
		return err
	}
	outDir := *out
	if outDir == "" {
		outDir = root
	}
	protos := flag.Args()
	if len(protos) == 0 {
		protos = defaultProtos
	}
	gen := Generator{ImportRoot: root, ToolDir: root, OutDir: outDir}
	written, err := gen.Generate(ctx, protos)
	if err != nil {
		return err
	}
	for _, name := range written {
		fmt.Println("wrote", name)
	}
	return nil
}
