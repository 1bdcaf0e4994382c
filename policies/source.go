package policies

import (
	"cmp"
	"context"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
)

// defaults holds the default policy and its tests.
//
//go:embed *.rego
var defaults embed.FS

// EmbeddedName is how the embedded default policies are named in messages.
const EmbeddedName = "(embedded)"

// Source is a policy directory, read and parsed but not compiled: every
// *.rego file directly in the directory (subdirectories and hidden files
// are ignored). Files ending in _test.rego hold Rego unit tests; they are
// compiled for the tests only and never take part in decisions.
type Source struct {
	// Dir is the directory read, or "" for the embedded defaults.
	Dir string
	// Files are the file names relative to Dir, sorted.
	Files []string
	// Revision identifies the contents: "sha256:" and the hex SHA-256 of
	// the files' relative names and contents, see [Revision].
	Revision string

	// modules are the parsed files keyed by display name (Dir joined with
	// the file name), which is what compile errors and test locations show.
	modules map[string]*ast.Module
	// tests are the display names of the _test.rego files.
	tests map[string]bool
}

// sourceFile is one .rego file as read.
type sourceFile struct {
	name    string
	content []byte
}

// ReadSource reads and parses the policies in dir; "" means the embedded
// defaults. A parse error names the file and line.
func ReadSource(dir string) (*Source, error) {
	files, err := readFiles(dir)
	if err != nil {
		return nil, err
	}
	s := &Source{
		Dir:      dir,
		Files:    make([]string, len(files)),
		Revision: revision(files),
		modules:  make(map[string]*ast.Module, len(files)),
		tests:    make(map[string]bool),
	}
	popts := ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}
	for i, f := range files {
		s.Files[i] = f.name
		display := displayName(dir, f.name)
		m, err := ast.ParseModuleWithOpts(display, string(f.content), popts)
		if err != nil {
			return nil, fmt.Errorf("policy file %s: %w", display, err)
		}
		if m == nil {
			return nil, fmt.Errorf("policy file %s: no package", display)
		}
		s.modules[display] = m
		if isTestFile(f.name) {
			s.tests[display] = true
		}
	}
	return s, nil
}

// Revision returns the revision of the policies in dir ("" for the
// embedded defaults) without parsing them: "sha256:" followed by the hex
// SHA-256 over, for each .rego file sorted by name, its relative name, a
// NUL byte and its content.
func Revision(dir string) (string, error) {
	files, err := readFiles(dir)
	if err != nil {
		return "", err
	}
	return revision(files), nil
}

func revision(files []sourceFile) string {
	h := sha256.New()
	for _, f := range files {
		h.Write([]byte(f.name))
		h.Write([]byte{0})
		h.Write(f.content)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

// readFiles reads the .rego files directly in dir, sorted by name. It
// follows symbolic links, so a Kubernetes ConfigMap volume (files that are
// links into a hidden ..data directory) reads as its files.
func readFiles(dir string) ([]sourceFile, error) {
	var fsys fs.FS = defaults
	if dir != "" {
		fsys = os.DirFS(dir)
	}
	where := cmp.Or(dir, EmbeddedName)
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil {
		return nil, fmt.Errorf("policy dir %s: %w", where, err)
	}
	var files []sourceFile
	for _, e := range entries {
		name := e.Name()
		// Hidden files include editor lock files such as .#healer.rego.
		if !strings.HasSuffix(name, ".rego") || strings.HasPrefix(name, ".") {
			continue
		}
		info, err := fs.Stat(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("policy dir %s: %w", where, err)
		}
		if info.IsDir() {
			continue
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, fmt.Errorf("policy dir %s: %w", where, err)
		}
		files = append(files, sourceFile{name: name, content: b})
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy dir %s: no .rego files", where)
	}
	slices.SortFunc(files, func(a, b sourceFile) int { return strings.Compare(a.name, b.name) })
	return files, nil
}

func displayName(dir, name string) string {
	if dir == "" {
		return path.Join("embedded", name)
	}
	return filepath.Join(dir, name)
}

func isTestFile(name string) bool { return strings.HasSuffix(name, "_test.rego") }

// TestOptions tune [Source.RunTests].
type TestOptions struct {
	// Verbose records traces, so that a reporter can show notes and the
	// failing expressions.
	Verbose bool
	// Run, when set, is a regular expression selecting the tests to run
	// by their full name (data.<package>.<test>).
	Run string
	// Timeout bounds each test; zero means 5 seconds.
	Timeout time.Duration
}

// CompileError is returned by [Source.RunTests] when the policies (tests
// included) do not compile, as opposed to compiling and failing tests.
type CompileError struct {
	Source string
	Err    error
}

// Error names the policy source and lists the compile errors.
func (e *CompileError) Error() string { return fmt.Sprintf("policy dir %s: %v", e.Source, e.Err) }

// Unwrap returns the compiler's errors.
func (e *CompileError) Unwrap() error { return e.Err }

// RunTests compiles all files of s, tests included, and runs the Rego unit
// tests (rules named test_*; todo_test_* are skipped) with OPA's tester,
// the way `opa test` does. The results are sorted by file and line. A
// compile error is returned as a *CompileError, and so is a file that uses
// a builtin healer keeps out of policies (network, files, the process's
// environment), with a *BuiltinError naming the file, line and builtin.
func (s *Source) RunTests(ctx context.Context, opts TestOptions) ([]*tester.Result, error) {
	if err := checkSandbox(s.modules); err != nil {
		return nil, &CompileError{Source: cmp.Or(s.Dir, EmbeddedName), Err: err}
	}
	runner := tester.NewRunner().
		SetDefaultRegoVersion(ast.RegoV1).
		SetCompiler(ast.NewCompiler().WithCapabilities(sandboxCapabilities()).WithEnablePrintStatements(true)).
		SetStore(inmem.New()).
		SetModules(s.modules).
		CapturePrintOutput(true).
		EnableTracing(opts.Verbose).
		SetTimeout(cmp.Or(opts.Timeout, 5*time.Second)).
		Filter(opts.Run)
	ch, err := runner.RunTests(ctx, nil)
	if err != nil {
		return nil, &CompileError{Source: cmp.Or(s.Dir, EmbeddedName), Err: err}
	}
	var results []*tester.Result
	for r := range ch {
		results = append(results, r)
	}
	if err := ctx.Err(); err != nil {
		return results, fmt.Errorf("policy dir %s: tests: %w", cmp.Or(s.Dir, EmbeddedName), err)
	}
	slices.SortFunc(results, func(a, b *tester.Result) int {
		if a.Location == nil || b.Location == nil {
			return strings.Compare(a.Name, b.Name)
		}
		return cmp.Or(strings.Compare(a.Location.File, b.Location.File), cmp.Compare(a.Location.Row, b.Location.Row))
	})
	return results, nil
}
