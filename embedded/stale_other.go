//go:build !unix

package embedded

func claimTempDir(string) error { return nil }
func removeStaleTempDirs()      {}
