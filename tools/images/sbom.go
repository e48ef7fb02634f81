package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// An SPDX 2.3 document (https://spdx.github.io/spdx-spec/v2.3/), only the
// fields an image's SBOM needs: the binary's main module, the Go standard
// library and every module linked in, as `go version -m` lists them.
type spdxDoc struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreationInfo   `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreationInfo struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	Name             string       `json:"name"`
	SPDXID           string       `json:"SPDXID"`
	VersionInfo      string       `json:"versionInfo"`
	DownloadLocation string       `json:"downloadLocation"`
	FilesAnalyzed    bool         `json:"filesAnalyzed"`
	Supplier         string       `json:"supplier,omitempty"`
	Comment          string       `json:"comment,omitempty"`
	ExternalRefs     []spdxExtRef `json:"externalRefs,omitempty"`
	PrimaryPurpose   string       `json:"primaryPackagePurpose,omitempty"`
}

type spdxExtRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

var spdxIDUnsafe = regexp.MustCompile(`[^A-Za-z0-9.-]+`)

func spdxID(prefix, name string) string {
	return "SPDXRef-" + prefix + "-" + strings.Trim(spdxIDUnsafe.ReplaceAllString(name, "-"), "-")
}

func purl(path, version string) spdxExtRef {
	return spdxExtRef{Category: "PACKAGE-MANAGER", Type: "purl", Locator: "pkg:golang/" + path + "@" + version}
}

// spdxFor turns a binary's build info into its SBOM. Everything in it
// comes from the binary and the build's inputs, so it is as reproducible
// as the binary.
func spdxFor(c component, version string, epoch time.Time, p v1.Platform, info *debug.BuildInfo) ([]byte, error) {
	if info.Main.Path == "" {
		return nil, fmt.Errorf("%s: the binary's build info names no main module", c.Name)
	}
	var settings []string
	for _, s := range info.Settings {
		settings = append(settings, s.Key+"="+s.Value)
	}
	mainID := spdxID("Package", c.Name)
	doc := spdxDoc{
		SPDXVersion: "SPDX-2.3",
		DataLicense: "CC0-1.0",
		SPDXID:      "SPDXRef-DOCUMENT",
		Name:        c.Name + "-" + version + "-" + p.OS + "-" + p.Architecture,
		// Unique per image and version, and stable across builds.
		DocumentNamespace: "https://meshtls.invalid/spdx/" + c.Name + "/" + version + "/" + p.OS + "-" + p.Architecture,
		CreationInfo: spdxCreationInfo{
			Created:  epoch.UTC().Format(time.RFC3339),
			Creators: []string{"Tool: meshtls-tools-images", "Organization: meshtls"},
		},
		Packages: []spdxPackage{{
			Name:             info.Main.Path + "/" + strings.TrimPrefix(c.Pkg, "./"),
			SPDXID:           mainID,
			VersionInfo:      version,
			DownloadLocation: "NOASSERTION",
			PrimaryPurpose:   "APPLICATION",
			Comment:          "Built with " + info.GoVersion + ": " + strings.Join(settings, " "),
			ExternalRefs:     []spdxExtRef{purl(info.Main.Path, version)},
		}, {
			Name:             "stdlib",
			SPDXID:           spdxID("Package", "stdlib"),
			VersionInfo:      info.GoVersion,
			DownloadLocation: "https://go.dev/dl/",
			PrimaryPurpose:   "LIBRARY",
			ExternalRefs:     []spdxExtRef{purl("stdlib", info.GoVersion)},
		}},
		Relationships: []spdxRelationship{
			{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: mainID},
			{Element: mainID, Type: "DEPENDS_ON", Related: spdxID("Package", "stdlib")},
		},
	}
	deps := append([]*debug.Module{}, info.Deps...)
	sort.Slice(deps, func(i, j int) bool { return deps[i].Path < deps[j].Path })
	for _, d := range deps {
		m := d
		if d.Replace != nil {
			m = d.Replace
		}
		id := spdxID("Package", m.Path+"-"+m.Version)
		pkg := spdxPackage{
			Name:             m.Path,
			SPDXID:           id,
			VersionInfo:      m.Version,
			DownloadLocation: "https://proxy.golang.org/" + m.Path + "/@v/" + m.Version + ".zip",
			PrimaryPurpose:   "LIBRARY",
			ExternalRefs:     []spdxExtRef{purl(m.Path, m.Version)},
		}
		if m.Sum != "" {
			pkg.Comment = "go.sum " + m.Sum
		}
		if d.Replace != nil {
			pkg.Comment = strings.TrimSpace("replaces " + d.Path + "@" + d.Version + "; " + pkg.Comment)
		}
		doc.Packages = append(doc.Packages, pkg)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: mainID, Type: "DEPENDS_ON", Related: id})
	}
	return json.MarshalIndent(doc, "", "  ")
}
