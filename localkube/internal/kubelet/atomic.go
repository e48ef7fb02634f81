package kubelet

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// volumeFile is one file of a Secret, ConfigMap, downward-API or projected
// volume, keyed by its path relative to the volume.
type volumeFile struct {
	data []byte
	mode os.FileMode
}

const dataLink = "..data"

// writeAtomic makes dir hold exactly files, the way kubelet's atomic writer
// does: the payload goes into a fresh hidden timestamped directory, the
// "..data" symlink is swapped to it with one rename, and each top-level name
// is a symlink through "..data". A reader that opens a path therefore sees
// either the whole old payload or the whole new one. It reports whether
// anything changed.
func writeAtomic(dir string, files map[string]volumeFile) (bool, error) {
	for p := range files {
		if p == "" || filepath.IsAbs(p) || strings.HasPrefix(p, "..") || strings.Contains(p, "/../") {
			return false, fmt.Errorf("invalid file path %q in volume", p)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	oldTarget, _ := os.Readlink(filepath.Join(dir, dataLink))
	if oldTarget != "" && sameFiles(filepath.Join(dir, oldTarget), files) {
		return false, ensureTopLinks(dir, files)
	}

	tsDir, err := os.MkdirTemp(dir, time.Now().UTC().Format("..2006_01_02_15_04_05."))
	if err != nil {
		return false, err
	}
	if err := os.Chmod(tsDir, 0o755); err != nil {
		return false, err
	}
	for p, f := range files {
		full := filepath.Join(tsDir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(full, f.data, f.mode); err != nil {
			return false, err
		}
		if err := os.Chmod(full, f.mode); err != nil {
			return false, err
		}
	}
	tmpLink := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(tsDir), tmpLink); err != nil {
		return false, err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataLink)); err != nil {
		return false, err
	}
	if err := ensureTopLinks(dir, files); err != nil {
		return false, err
	}
	if oldTarget != "" && oldTarget != filepath.Base(tsDir) {
		_ = os.RemoveAll(filepath.Join(dir, oldTarget))
	}
	return true, nil
}

// ensureTopLinks points each top-level name at ..data/name and removes
// links for names the payload no longer has.
func ensureTopLinks(dir string, files map[string]volumeFile) error {
	want := map[string]bool{}
	for p := range files {
		want[strings.SplitN(p, "/", 2)[0]] = true
	}
	names := make([]string, 0, len(want))
	for n := range want {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		link := filepath.Join(dir, n)
		target := filepath.Join(dataLink, n)
		if cur, err := os.Readlink(link); err == nil && cur == target {
			continue
		}
		_ = os.Remove(link)
		if err := os.Symlink(target, link); err != nil {
			return err
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || want[e.Name()] {
			continue
		}
		if e.Type()&os.ModeSymlink != 0 {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

func sameFiles(dir string, files map[string]volumeFile) bool {
	count := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(dir, path)
		f, ok := files[rel]
		if !ok {
			return fmt.Errorf("extra file")
		}
		info, err := d.Info()
		if err != nil || info.Mode().Perm() != f.mode.Perm() {
			return fmt.Errorf("mode differs")
		}
		b, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(b, f.data) {
			return fmt.Errorf("content differs")
		}
		count++
		return nil
	})
	return err == nil && count == len(files)
}
