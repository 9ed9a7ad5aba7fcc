//go:build !unix

package embedded

import "os"

func claimTempDir(string) (*os.File, error) { return nil, nil }
func removeStaleTempDirs()                  {}
