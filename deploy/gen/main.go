// Command gen writes the chart's template of the remediators' RBAC from the
// remediator registry, then renders the chart with its default values into
// the plain manifest. Run it from the module root: go run ./deploy/gen (or
// make manifests).
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/selfheal/healer/deploy/render"
	"github.com/selfheal/healer/remediators"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, ".")
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy/gen:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, root string) error {
	rbac, err := render.RBACTemplate(remediators.Infos())
	if err != nil {
		return err
	}
	if err := write(filepath.Join(root, render.RBACTemplatePath), rbac); err != nil {
		return err
	}
	manifest, err := render.Manifest(ctx, root)
	if err != nil {
		return err
	}
	return write(filepath.Join(root, render.ManifestPath), manifest)
}

func write(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o644); err != nil { //nolint:gosec // G306: committed files, world-readable like the rest of the repository
		return fmt.Errorf("write %s: %w", path, err)
	}
	fmt.Println("wrote", path)
	return nil
}
