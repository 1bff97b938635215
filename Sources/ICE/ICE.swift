/// ICE agents over libnice. See docs/ice.md.
public enum ICEModule {}
