package devserver

import (
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"sync/atomic"
)

// freePort asks the OS for a port that is free on ip. The server binds its own listeners, so
// the port is only reserved by convention; the connection trick below (from the server's
// common/testing/freeport, which panics instead of returning an error) leaves the port in
// TIME_WAIT so Linux does not hand the same number to the next bind(:0) in this process
// before the server takes it, which matters when tests start several servers at once.
func freePort(ip string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	addr := l.Addr().(*net.TCPAddr)
	dial := *addr
	if dial.IP.IsUnspecified() {
		dial.IP = net.ParseIP(loopback)
	}
	c, err := net.DialTCP("tcp", nil, &dial)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		return 0, err
	}
	// Closing from the server side first is what puts the port in TIME_WAIT.
	_ = s.Close()
	return addr.Port, nil
}

// portAvailable reports whether ip:port can be listened on right now, so that a demo started
// twice says which port is taken instead of failing deep in the server's start-up.
func portAvailable(ip string, port int) error {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
	if err != nil {
		return err
	}
	return l.Close()
}

var memoryDBSeq atomic.Uint64

// memoryDBName names an in-memory SQLite DB. With cache=shared, every connection in the
// process that opens the same name shares one DB, so two servers in one process (or a
// server started after another stopped) must never reuse a name.
func memoryDBName() string {
	return fmt.Sprintf("devserver-%d-%s", memoryDBSeq.Add(1), rand.Text()[:8])
}
