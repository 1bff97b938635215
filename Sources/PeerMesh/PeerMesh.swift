/// Node identity, mesh transports and WebPush signaling. See docs/peermesh.md.
public enum PeerMeshModule {}
