import NIOCore
import NIOHTTP2

/// HTTP/2 and socket settings shared by the mesh server and client, sized for throughput.
struct H2Tuning: Sendable {
    /// Per-stream flow-control window (SETTINGS_INITIAL_WINDOW_SIZE) and target.
    var streamWindow: Int
    /// Connection-level flow-control window target.
    var connectionWindow: Int
    /// SETTINGS_MAX_CONCURRENT_STREAMS we advertise.
    var maxConcurrentStreams: Int
    /// SETTINGS_MAX_FRAME_SIZE we advertise (the largest DATA frame we accept), and the largest
    /// read from a socket joined to a stream or from a mesh connection (`MeshConfig.ioChunkSize`):
    /// one read becomes one DATA frame, and one read's bytes pass TLS, the HTTP/2 parser and the
    /// next socket while they are still in the CPU cache.
    var frameSize: Int

    /// HTTP/2's bounds for SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2).
    static let frameSizeRange = (1 << 14)...((1 << 24) - 1)

    init(config: MeshConfig) {
        streamWindow = min(config.windowSize, Int(Int32.max))
        connectionWindow = min(max(2 * config.windowSize, 16 << 20), Int(Int32.max))
        maxConcurrentStreams = config.maxConcurrentStreams
        frameSize = min(max(config.ioChunkSize, Self.frameSizeRange.lowerBound), Self.frameSizeRange.upperBound)
    }

    var connectionConfiguration: NIOHTTP2Handler.ConnectionConfiguration {
        var c = NIOHTTP2Handler.ConnectionConfiguration()
        c.initialSettings = [
            HTTP2Setting(parameter: .maxConcurrentStreams, value: maxConcurrentStreams),
            HTTP2Setting(parameter: .initialWindowSize, value: streamWindow),
            HTTP2Setting(parameter: .maxFrameSize, value: frameSize),
            HTTP2Setting(parameter: .maxHeaderListSize, value: 16 << 10),
        ]
        c.targetWindowSize = connectionWindow
        // One empty DATA frame carries each half-close.
        c.maximumSequentialEmptyDataFrames = 2
        return c
    }

    var streamConfiguration: NIOHTTP2Handler.StreamConfiguration {
        var s = NIOHTTP2Handler.StreamConfiguration()
        s.targetWindowSize = streamWindow
        // Stream channel writability: how much may wait for flow-control window before the glue
        // stops reading the socket that feeds it (four maximum-size frames, resumes at two).
        s.outboundBufferSizeHighWatermark = 4 * frameSize
        s.outboundBufferSizeLowWatermark = 2 * frameSize
        return s
    }

    /// Options for the TCP socket under a mesh TLS connection: reads up to one chunk (several
    /// TLS records per syscall) and write-buffer water marks above a few DATA frames, so the
    /// connection does not turn unwritable (which stops every stream's feeding socket) after
    /// each frame.
    func configureConnectionSocket(_ channel: any Channel) throws {
        let options = try channel.syncOptions.unwrap(orError: ChannelError.operationUnsupported)
        try options.setOption(.writeBufferWaterMark, value: .init(low: max(1 << 20, 2 * frameSize), high: max(4 << 20, 8 * frameSize)))
        try options.setOption(.recvAllocator, value: readAllocator)
    }

    /// Options for plain sockets joined to streams (destination TCP, socketpair ends): reads up to
    /// one maximum-size DATA frame.
    func configureByteSocket(_ channel: any Channel) throws {
        let options = try channel.syncOptions.unwrap(orError: ChannelError.operationUnsupported)
        try options.setOption(.allowRemoteHalfClosure, value: true)
        try options.setOption(.writeBufferWaterMark, value: .init(low: max(1 << 19, frameSize), high: max(1 << 20, 2 * frameSize)))
        try options.setOption(.recvAllocator, value: readAllocator)
    }

    private var readAllocator: AdaptiveRecvByteBufferAllocator {
        AdaptiveRecvByteBufferAllocator(minimum: 1024, initial: min(64 << 10, frameSize), maximum: frameSize)
    }
}

extension Optional {
    func unwrap(orError error: @autoclosure () -> any Error) throws -> Wrapped {
        guard let self else { throw error() }
        return self
    }
}
