//go:build unix

package sim

import "syscall"

// RaiseFileLimit raises this process's open-file limit to at least n (soft
// and, when permitted, hard), so one process can hold n connections. It
// returns the soft limit in force afterwards.
func RaiseFileLimit(n uint64) (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur >= n {
		return l.Cur, nil
	}
	want := l
	want.Cur = n
	if want.Max < n {
		want.Max = n
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		// Not privileged: go as far as the hard limit.
		want = l
		want.Cur = l.Max
		if err2 := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err2 != nil {
			return l.Cur, err
		}
		return want.Cur, err
	}
	return n, nil
}
