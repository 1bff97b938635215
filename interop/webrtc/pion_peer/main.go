// pion_peer: a pion/webrtc v3 data-channel peer speaking the `ugate webrtc` signalling: one
// JSON line per description on stdout/stdin ({"type":"offer","sdp":"..."}), logs on stderr.
//
//	pion_peer offer|answer (-echo | -send N) [-channels K] [-message-size N]
//
// -echo echoes every message on every channel the other side opens and exits once all of them
// have closed again (or the connection ends); -send N opens K channels (default 1), spreads N
// pseudo-random bytes over them, waits for the echo and prints {"type":"result",...,
// "channels":K,"openMs":...} like `ugate webrtc --send` (with several channels the digests are
// SHA-256 over the per-channel hex digests in channel order; openMs is the time from creating
// the offer, or receiving it, to the first open channel). Loopback candidates on,
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
	"github.com/pion/logging"
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
	Channels       int     `json:"channels"`
	OpenMs         float64 `json:"openMs"`
}

// share is one channel's part of a -send run.
type share struct {
	sent, received string
	receivedBytes  int
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

// sendAndVerify sends total bytes on d once it is open (opened is closed then) and reports
// its digests on done after the echo came back.
func sendAndVerify(d *webrtc.DataChannel, total, size int, opened chan<- struct{}, done chan<- share) {
	openedHere := make(chan struct{})
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
	d.OnOpen(func() {
		opened <- struct{}{}
		close(openedHere)
	})
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
		<-openedHere
		block := make([]byte, size)
		rand.Read(block)
		sentHash := sha256.New()
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
		mu.Lock()
		s := share{hex.EncodeToString(sentHash.Sum(nil)), hex.EncodeToString(recvHash.Sum(nil)), received}
		mu.Unlock()
		done <- s
	}()
}

// sendAll opens k channels, spreads total bytes over them and reports one result.
func sendAll(pc *webrtc.PeerConnection, total, k, size int, start time.Time, done chan<- result) {
	opened := make(chan struct{}, k)
	shares := make([]chan share, k)
	channels := make([]*webrtc.DataChannel, k)
	part := total / k
	for i := 0; i < k; i++ {
		d, err := pc.CreateDataChannel(fmt.Sprintf("pion-bulk-%d", i), nil)
		if err != nil {
			fail("create channel: %v", err)
		}
		n := part
		if i == 0 {
			n = total - part*(k-1)
		}
		shares[i] = make(chan share, 1)
		channels[i] = d
		sendAndVerify(d, n, size, opened, shares[i])
	}
	go func() {
		<-opened
		openMs := float64(time.Since(start).Microseconds()) / 1000
		for i := 1; i < k; i++ {
			<-opened
		}
		t0 := time.Now()
		var sent, recv []string
		received := 0
		for i := 0; i < k; i++ {
			s := <-shares[i]
			sent = append(sent, s.sent)
			recv = append(recv, s.received)
			received += s.receivedBytes
		}
		seconds := time.Since(t0).Seconds()
		for _, d := range channels {
			d.Close()
		}
		done <- result{"result", total, received, seconds, float64(total) * 8 / seconds / 1e6,
			combine(sent), combine(recv), k, openMs}
	}()
}

func combine(digests []string) string {
	if len(digests) == 1 {
		return digests[0]
	}
	sum := sha256.New()
	for _, d := range digests {
		sum.Write([]byte(d))
	}
	return hex.EncodeToString(sum.Sum(nil))
}

func main() {
	echo := flag.Bool("echo", false, "echo every message until the peer closes")
	send := flag.Int("send", -1, "bytes to send and expect back")
	messageSize := flag.Int("message-size", 16384, "message size for -send")
	channelCount := flag.Int("channels", 1, "channels to spread -send over")
	if len(os.Args) < 2 || (os.Args[1] != "offer" && os.Args[1] != "answer") {
		fail("usage: pion_peer offer|answer (-echo | -send N)")
	}
	flag.CommandLine.Parse(os.Args[2:])
	offerer := os.Args[1] == "offer"

	var se webrtc.SettingEngine
	// pion logs to stdout by default, which carries the signalling: send its log (PION_LOG_*
	// environment variables) to stderr.
	logs := logging.NewDefaultLoggerFactory()
	logs.Writer = os.Stderr
	se.LoggerFactory = logs
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
	var incoming sync.Mutex
	openedIncoming, closedIncoming := 0, 0
	pc.OnDataChannel(func(d *webrtc.DataChannel) {
		logf("peer opened channel %s", d.Label())
		incoming.Lock()
		openedIncoming++
		incoming.Unlock()
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
		d.OnClose(func() {
			incoming.Lock()
			closedIncoming++
			all := closedIncoming == openedIncoming
			incoming.Unlock()
			if all {
				end("every channel closed")
			}
		})
	})

	done := make(chan result, 1)
	start := time.Now()
	startSender := func() {
		if *send >= 0 {
			if *channelCount < 1 {
				fail("-channels must be at least 1")
			}
			sendAll(pc, *send, *channelCount, *messageSize, start, done)
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
		start = time.Now()
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
