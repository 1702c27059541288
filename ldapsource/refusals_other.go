//go:build !unix

package ldapsource

func chownLike(file, dir string) {}
