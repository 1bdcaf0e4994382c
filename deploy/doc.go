// Package deploy holds healer's Helm chart (helm/healer), the plain manifest
// rendered from it (manifests/healer.yaml) and their tests; see README.md.
// The generator is deploy/gen and the rendering deploy/render.
package deploy
