// Package runbooks embeds the runbooks, so that serve can show the one a
// Slack message or an audit record links to.
package runbooks

import (
	"embed"
	"io/fs"
)

//go:embed *.md
var files embed.FS

// FS returns the runbooks, one Markdown file per detector and remediator.
func FS() fs.FS { return files }
