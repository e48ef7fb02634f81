package stat

import (
	"bytes"
	"io"
	"strconv"
)

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(s, 64) }

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
