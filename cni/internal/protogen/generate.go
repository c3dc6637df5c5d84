package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/format"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/bufbuild/protocompile/linker"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/pluginpb"
)

// plugins are run in this order, each with the same request. The parameter
// is what `--go_opt=paths=source_relative` would pass.
var plugins = []struct{ tool, parameter string }{
	{"protoc-gen-go", "paths=source_relative"},
	{"protoc-gen-go-grpc", "paths=source_relative"},
}

// Generator says where the sources, the plugins and the output are.
type Generator struct {
	// ImportRoot is the only import path: .proto paths are relative to it.
	ImportRoot string
	// ToolDir is a directory of the module whose go.mod declares the
	// plugins as tools; `go tool` runs there.
	ToolDir string
	// OutDir receives the generated files, at the paths the plugins name.
	OutDir string
}

// Generate compiles protos and writes the plugins' output below g.OutDir.
// It returns the written paths.
func (g Generator) Generate(ctx context.Context, protos []string) ([]string, error) {
	req, err := BuildRequest(ctx, g.ImportRoot, protos)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, p := range plugins {
		req.Parameter = proto.String(p.parameter)
		resp, err := runPlugin(ctx, g.ToolDir, p.tool, req)
		if err != nil {
			return written, err
		}
		for _, f := range resp.GetFile() {
			path, err := writeOutput(g.OutDir, f)
			if err != nil {
				return written, fmt.Errorf("%s: %w", p.tool, err)
			}
			written = append(written, path)
		}
	}
	return written, nil
}

// BuildRequest compiles protos (relative to root) and fills a CodeGeneratorRequest the way
// protoc does: files to generate in command-line order, every file they need
// in dependency order with json_name and source info, and the files to
// generate again as source_file_descriptors. compiler_version stays unset
// (the plugins print "(unknown)", as they do under buf).
func BuildRequest(ctx context.Context, root string, protos []string) (*pluginpb.CodeGeneratorRequest, error) {
	compiler := protocompile.Compiler{
		Resolver:       protocompile.WithStandardImports(&protocompile.SourceResolver{ImportPaths: []string{root}}),
		SourceInfoMode: protocompile.SourceInfoStandard,
	}
	files, err := compiler.Compile(ctx, protos...)
	if err != nil {
		return nil, fmt.Errorf("compile %s: %w", strings.Join(protos, " "), err)
	}

	req := &pluginpb.CodeGeneratorRequest{FileToGenerate: protos}
	seen := map[string]bool{}
	var addWithDeps func(fd protoreflect.FileDescriptor)
	addWithDeps = func(fd protoreflect.FileDescriptor) {
		if seen[fd.Path()] {
			return
		}
		seen[fd.Path()] = true
		imports := fd.Imports()
		for i := range imports.Len() {
			addWithDeps(imports.Get(i).FileDescriptor)
		}
		req.ProtoFile = append(req.ProtoFile, descriptorProto(fd))
	}
	for _, f := range files {
		addWithDeps(f)
		req.SourceFileDescriptors = append(req.SourceFileDescriptors, descriptorProto(f))
	}
	return req, nil
}

// descriptorProto returns the descriptor as parsed (which keeps json_name and
// source info exactly as protocompile made them), or rebuilt from the
// descriptor for files that did not come from source (standard imports).
func descriptorProto(fd protoreflect.FileDescriptor) *descriptorpb.FileDescriptorProto {
	if r, ok := fd.(linker.Result); ok {
		return proto.Clone(r.FileDescriptorProto()).(*descriptorpb.FileDescriptorProto)
	}
	return protodesc.ToFileDescriptorProto(fd)
}

// runPlugin runs `go tool <tool>` in dir with req on stdin.
func runPlugin(ctx context.Context, dir, tool string, req *pluginpb.CodeGeneratorRequest) (*pluginpb.CodeGeneratorResponse, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request for %s: %w", tool, err)
	}
	cmd := exec.CommandContext(ctx, "go", "tool", tool)
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go tool %s: %w: %s", tool, err, strings.TrimSpace(stderr.String()))
	}
	resp := &pluginpb.CodeGeneratorResponse{}
	if err := proto.Unmarshal(stdout.Bytes(), resp); err != nil {
		return nil, fmt.Errorf("decode response of %s: %w", tool, err)
	}
	if resp.Error != nil {
		return nil, fmt.Errorf("%s: %s", tool, resp.GetError())
	}
	// protoc refuses proto3 optional fields unless the plugin declares
	// support; do the same rather than emit code that silently differs.
	if usesProto3Optional(req) && resp.GetSupportedFeatures()&uint64(pluginpb.CodeGeneratorResponse_FEATURE_PROTO3_OPTIONAL) == 0 {
		return nil, fmt.Errorf("%s does not support proto3 optional fields", tool)
	}
	return resp, nil
}

func usesProto3Optional(req *pluginpb.CodeGeneratorRequest) bool {
	for _, f := range req.GetProtoFile() {
		var inMessages func(msgs []*descriptorpb.DescriptorProto) bool
		inMessages = func(msgs []*descriptorpb.DescriptorProto) bool {
			for _, m := range msgs {
				for _, fld := range m.GetField() {
					if fld.GetProto3Optional() {
						return true
					}
				}
				if inMessages(m.GetNestedType()) {
					return true
				}
			}
			return false
		}
		if inMessages(f.GetMessageType()) {
			return true
		}
	}
	return false
}

// writeOutput writes one generated file below outDir, gofmt'd.
func writeOutput(outDir string, f *pluginpb.CodeGeneratorResponse_File) (string, error) {
	if f.GetInsertionPoint() != "" {
		return "", fmt.Errorf("insertion points are not supported (file %q)", f.GetName())
	}
	name := filepath.FromSlash(f.GetName())
	if name == "" || filepath.IsAbs(name) || !filepath.IsLocal(name) {
		return "", fmt.Errorf("refusing to write outside the output directory: %q", f.GetName())
	}
	content := []byte(f.GetContent())
	if strings.HasSuffix(name, ".go") {
		formatted, err := format.Source(content)
		if err != nil {
			return "", fmt.Errorf("gofmt %s: %w", name, err)
		}
		content = formatted
	}
	path := filepath.Join(outDir, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("create directory for %s: %w", name, err)
	}
	if err := os.WriteFile(path, content, 0o644); err != nil {
		return "", fmt.Errorf("write %s: %w", name, err)
	}
	return path, nil
}

// moduleRoot finds the directory holding go.mod, from the working directory
// up, so the generator works wherever `go run` is started in the module.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("look for go.mod: %w", err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found in the working directory or any parent")
		}
		dir = parent
	}
}
