// pion_peer: a pion/webrtc v3 data-channel peer speaking the `ugate webrtc` signalling: one
// JSON line per description on stdout/stdin ({"type":"offer","sdp":"..."}), logs on stderr.
//
//	pion_peer offer|answer (-echo | -send N) [-message-size N]
//
// -echo echoes every message on every channel the other side opens and exits when one of them
// (or the connection) closes; -send N opens a channel, sends N pseudo-random bytes, waits for
// the echo and prints {"type":"result",...} like `ugate webrtc --send`. Loopback candidates on,
// mDNS off, UDP4 only (see /work/shared/INTEROP.md). pion v3.1.56 cannot receive messages of
// 65536 bytes or more: keep -message-size (and the peer's) below that.
package main

import (
	"bufio"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/pion/ice/v2"
	"github.com/pion/webrtc/v3"
)

type signal struct {
	Type string `json:"type,omitempty"`
	SDP  string `json:"sdp,omitempty"`
}

type result struct {
	Type           string  `json:"type"`
	Bytes          int     `json:"bytes"`
	ReceivedBytes  int     `json:"receivedBytes"`
	Seconds        float64 `json:"seconds"`
	Mbps           float64 `json:"mbps"`
	SentSHA256     string  `json:"sentSHA256"`
	ReceivedSHA256 string  `json:"receivedSHA256"`
}

func logf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pion_peer: "+format+"\n", args...)
}

func fail(format string, args ...interface{}) {
	logf(format, args...)
	os.Exit(1)
}

func writeLine(v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		fail("json: %v", err)
	}
	os.Stdout.Write(append(b, '\n'))
}

func readDescription(scanner *bufio.Scanner, want string) string {
	for scanner.Scan() {
		var s signal
		if err := json.Unmarshal(scanner.Bytes(), &s); err != nil {
			continue
		}
		if s.Type == want {
			return s.SDP
		}
	}
	fail("signalling ended before the %s", want)
	return ""
}

func sendAndVerify(d *webrtc.DataChannel, total, size int, done chan<- result) {
	opened := make(chan struct{})
	low := make(chan struct{}, 1)
	echoed := make(chan struct{})
	var mu sync.Mutex
	recvHash := sha256.New()
	received := 0
	d.SetBufferedAmountLowThreshold(1 << 20)
	d.OnBufferedAmountLow(func() {
		select {
		case low <- struct{}{}:
		default:
		}
	})
	d.OnOpen(func() { close(opened) })
	d.OnMessage(func(msg webrtc.DataChannelMessage) {
		mu.Lock()
		defer mu.Unlock()
		recvHash.Write(msg.Data)
		received += len(msg.Data)
		if received >= total && received-len(msg.Data) < total {
			close(echoed)
		}
	})
	go func() {
		<-opened
		block := make([]byte, size)
		rand.Read(block)
		sentHash := sha256.New()
		start := time.Now()
		sent := 0
		for counter := uint64(0); sent < total; counter++ {
			n := size
			if total-sent < n {
				n = total - sent
			}
			chunk := make([]byte, n)
			copy(chunk, block[:n])
			if n >= 8 {
				binary.BigEndian.PutUint64(chunk, counter)
			}
			sentHash.Write(chunk)
			if err := d.Send(chunk); err != nil {
				fail("send: %v", err)
			}
			sent += n
			for d.BufferedAmount() > 4<<20 {
				select {
				case <-low:
				case <-time.After(100 * time.Millisecond):
				}
			}
		}
		if total > 0 {
			select {
			case <-echoed:
			case <-time.After(120 * time.Second):
				fail("echo incomplete after 120 s")
			}
		}
		seconds := time.Since(start).Seconds()
		mu.Lock()
		r := result{"result", total, received, seconds, float64(total) * 8 / seconds / 1e6,
			hex.EncodeToString(sentHash.Sum(nil)), hex.EncodeToString(recvHash.Sum(nil))}
		mu.Unlock()
		done <- r
	}()
}

func main() {
	echo := flag.Bool("echo", false, "echo every message until the peer closes")
	send := flag.Int("send", -1, "bytes to send and expect back")
	messageSize := flag.Int("message-size", 16384, "message size for -send")
	if len(os.Args) < 2 || (os.Args[1] != "offer" && os.Args[1] != "answer") {
		fail("usage: pion_peer offer|answer (-echo | -send N)")
	}
	flag.CommandLine.Parse(os.Args[2:])
	offerer := os.Args[1] == "offer"

	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		fail("peer connection: %v", err)
	}
	ended := make(chan struct{})
	var endOnce sync.Once
	end := func(why string) {
		endOnce.Do(func() {
			logf("ending: %s", why)
			close(ended)
		})
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		logf("connection state %s", s)
		if s == webrtc.PeerConnectionStateClosed || s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateDisconnected {
			end("connection " + s.String())
		}
	})
	pc.OnDataChannel(func(d *webrtc.DataChannel) {
		logf("peer opened channel %s", d.Label())
		d.OnMessage(func(msg webrtc.DataChannelMessage) {
			if os.Getenv("PION_PEER_DEBUG") != "" {
				logf("echo %d bytes on %s", len(msg.Data), d.Label())
			}
			if msg.IsString {
				d.SendText(string(msg.Data))
			} else {
				d.Send(msg.Data)
			}
		})
		d.OnClose(func() { end("channel " + d.Label() + " closed") })
	})

	done := make(chan result, 1)
	startSender := func() {
		if *send >= 0 {
			d, err := pc.CreateDataChannel("pion-bulk", nil)
			if err != nil {
				fail("create channel: %v", err)
			}
			sendAndVerify(d, *send, *messageSize, done)
		}
	}

	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	if offerer {
		startSender()
		if *send < 0 {
			if _, err := pc.CreateDataChannel("pion-idle", nil); err != nil {
				fail("create channel: %v", err)
			}
		}
		offer, err := pc.CreateOffer(nil)
		if err != nil {
			fail("offer: %v", err)
		}
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(offer); err != nil {
			fail("set local: %v", err)
		}
		<-gathered
		writeLine(signal{"offer", pc.LocalDescription().SDP})
		answer := readDescription(scanner, "answer")
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
			fail("set remote answer: %v", err)
		}
	} else {
		offer := readDescription(scanner, "offer")
		if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
			fail("set remote offer: %v", err)
		}
		answer, err := pc.CreateAnswer(nil)
		if err != nil {
			fail("answer: %v", err)
		}
		gathered := webrtc.GatheringCompletePromise(pc)
		if err := pc.SetLocalDescription(answer); err != nil {
			fail("set local: %v", err)
		}
		<-gathered
		writeLine(signal{"answer", pc.LocalDescription().SDP})
		startSender()
	}

	if *send >= 0 {
		r := <-done
		pc.Close()
		writeLine(r)
		if r.Bytes != r.ReceivedBytes || r.SentSHA256 != r.ReceivedSHA256 {
			fail("echo differs")
		}
		return
	}
	if !*echo {
		fail("give -echo or -send N")
	}
	<-ended
	pc.Close()
}
