package main

import (
	"net"
	"sync"
	"testing"
	"time"
)

// faultProxy forwards TCP connections to a server and lets a test make that
// server slow (delay on every reply), hold every reply until released, or
// make it unreachable (down), the faults a network gives, without touching
// the shared server itself. It counts the connections whose request waits
// for its reply, so a test can wait for requests to arrive instead of
// sleeping.
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu      sync.Mutex
	delay   time.Duration
	held    chan struct{} // not nil: replies wait until it is closed
	down    bool
	conns   map[net.Conn]struct{}
	pending int           // connections with a request sent and its reply not yet delivered
	changed chan struct{} // closed when pending changes
}

// link is one proxied connection.
type link struct {
	pending bool // guarded by faultProxy.mu
}

func startProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &faultProxy{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.release()
		p.setDown(true)
	})
	return p
}

// hold makes replies wait until release.
func (p *faultProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// release lets the held replies and all later ones through.
func (p *faultProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// waitPending waits until n connections each have a request waiting for its
// reply (held, delayed or not yet answered), failing t after 10s.
func (p *faultProxy) waitPending(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		p.mu.Lock()
		pending := p.pending
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		changed := p.changed
		p.mu.Unlock()
		if pending >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("proxy to %s: %d requests pending after 10s, want %d", p.target, pending, n)
		}
	}
}

// setPending marks l as waiting for a reply or not; p.mu is held.
func (p *faultProxy) setPending(l *link, pending bool) {
	if l.pending == pending {
		return
	}
	l.pending = pending
	if pending {
		p.pending++
	} else {
		p.pending--
	}
	if p.changed != nil {
		close(p.changed)
		p.changed = nil
	}
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) setDelay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// setDown(true) drops every open connection and refuses new ones.
func (p *faultProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *faultProxy) serve() {
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			client.Close()
			continue
		}
		server, err := net.DialTimeout("tcp", p.target, time.Second)
		if err != nil {
			client.Close()
			continue
		}
		p.mu.Lock()
		p.conns[client], p.conns[server] = struct{}{}, struct{}{}
		p.mu.Unlock()
		l := &link{}
		go p.pipe(server, client, l, false)
		go p.pipe(client, server, l, true)
	}
}

// pipe copies src to dst; replies (server to client) wait for the delay
// and while replies are held.
func (p *faultProxy) pipe(dst, src net.Conn, l *link, reply bool) {
	defer dst.Close()
	defer src.Close()
	defer func() {
		p.mu.Lock()
		p.setPending(l, false)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if reply {
				p.mu.Lock()
				d, held := p.delay, p.held
				p.mu.Unlock()
				if held != nil {
					<-held
				}
				time.Sleep(d)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			// A request delivered waits for its reply; a reply delivered ends the wait.
			p.mu.Lock()
			p.setPending(l, !reply)
			p.mu.Unlock()
		}
		if err != nil {
			return
		}
	}
}
