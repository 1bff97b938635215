#ifndef UGATE_CNICESHIM_H
#define UGATE_CNICESHIM_H
#include <nice/agent.h>

/// g_signal_connect is a macro; Swift cannot import it.
gulong ugate_g_signal_connect(gpointer instance, const gchar *signal, GCallback handler, gpointer data);

/// g_signal_handlers_disconnect_by_data is a macro; disconnects every handler that was
/// connected with `data` as its user data. Returns how many were disconnected.
guint ugate_g_signal_handlers_disconnect_by_data(gpointer instance, gpointer data);

/// g_object_set is variadic; these set one typed property.
void ugate_g_object_set_boolean(gpointer object, const gchar *property, gboolean value);
void ugate_g_object_set_uint(gpointer object, const gchar *property, guint value);
void ugate_g_object_set_string(gpointer object, const gchar *property, const gchar *value);

/// Signal handler shapes of NiceAgent (typed so Swift can pass @convention(c) closures).
typedef void (*ugate_nice_gathering_done_cb)(NiceAgent *agent, guint stream_id, gpointer data);
typedef void (*ugate_nice_new_candidate_cb)(NiceAgent *agent, NiceCandidate *candidate, gpointer data);
typedef void (*ugate_nice_state_changed_cb)(NiceAgent *agent, guint stream_id, guint component_id,
                                            guint state, gpointer data);
typedef void (*ugate_nice_selected_pair_cb)(NiceAgent *agent, guint stream_id, guint component_id,
                                            NiceCandidate *local, NiceCandidate *remote, gpointer data);

/// Connects the four NiceAgent signals ugate uses to typed handlers, all with user data `data`.
void ugate_nice_connect_signals(NiceAgent *agent, gpointer data,
                                ugate_nice_gathering_done_cb gathering_done,
                                ugate_nice_new_candidate_cb new_candidate,
                                ugate_nice_state_changed_cb state_changed,
                                ugate_nice_selected_pair_cb selected_pair);

/// Adds a local address given as an IP literal (port 0 = any). FALSE when the literal is invalid.
gboolean ugate_nice_add_local_address(NiceAgent *agent, const gchar *ip);

/// Moves the calling thread into the network namespace at `path` (e.g. /var/run/netns/NAME).
/// Returns 0, or -errno.
int ugate_enter_net_namespace(const char *path);

/// The largest UDP payload the kernel would send unfragmented to `ip` (an IP literal) on
/// `port`: IP_MTU / IPV6_MTU of a UDP socket connected there (the route's MTU or the cached
/// path MTU), minus the IP and UDP headers (28 bytes over IPv4, 48 over IPv6). The probe socket
/// sends nothing. Returns the size, or -errno (-EINVAL for a malformed literal).
int ugate_udp_path_payload_limit(const char *ip, unsigned short port);

#endif
