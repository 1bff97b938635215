#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "CNiceShim.h"

gulong ugate_g_signal_connect(gpointer instance, const gchar *signal, GCallback handler, gpointer data) {
    return g_signal_connect(instance, signal, handler, data);
}

guint ugate_g_signal_handlers_disconnect_by_data(gpointer instance, gpointer data) {
    return g_signal_handlers_disconnect_by_data(instance, data);
}

void ugate_g_object_set_boolean(gpointer object, const gchar *property, gboolean value) {
    g_object_set(object, property, value, NULL);
}

void ugate_g_object_set_uint(gpointer object, const gchar *property, guint value) {
    g_object_set(object, property, value, NULL);
}

void ugate_g_object_set_string(gpointer object, const gchar *property, const gchar *value) {
    g_object_set(object, property, value, NULL);
}

void ugate_nice_connect_signals(NiceAgent *agent, gpointer data,
                                ugate_nice_gathering_done_cb gathering_done,
                                ugate_nice_new_candidate_cb new_candidate,
                                ugate_nice_state_changed_cb state_changed,
                                ugate_nice_selected_pair_cb selected_pair) {
    g_signal_connect(agent, "candidate-gathering-done", G_CALLBACK(gathering_done), data);
    g_signal_connect(agent, "new-candidate-full", G_CALLBACK(new_candidate), data);
    g_signal_connect(agent, "component-state-changed", G_CALLBACK(state_changed), data);
    g_signal_connect(agent, "new-selected-pair-full", G_CALLBACK(selected_pair), data);
}

gboolean ugate_nice_add_local_address(NiceAgent *agent, const gchar *ip) {
    NiceAddress addr;
    nice_address_init(&addr);
    if (!nice_address_set_from_string(&addr, ip)) return FALSE;
    nice_address_set_port(&addr, 0);
    return nice_agent_add_local_address(agent, &addr);
}

int ugate_enter_net_namespace(const char *path) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -errno;
    int rc = setns(fd, CLONE_NEWNET);
    int err = errno;
    close(fd);
    return rc == 0 ? 0 : -err;
}

int ugate_udp_path_payload_limit(const char *ip, unsigned short port) {
    struct addrinfo hints = {0}, *found = NULL;
    hints.ai_flags = AI_NUMERICHOST;
    hints.ai_socktype = SOCK_DGRAM;
    if (getaddrinfo(ip, NULL, &hints, &found) != 0 || found == NULL) return -EINVAL;
    int family = found->ai_family;
    struct sockaddr_storage address;
    socklen_t length = found->ai_addrlen;
    memcpy(&address, found->ai_addr, length);
    freeaddrinfo(found);
    if (family == AF_INET) ((struct sockaddr_in *)&address)->sin_port = htons(port);
    else if (family == AF_INET6) ((struct sockaddr_in6 *)&address)->sin6_port = htons(port);
    else return -EAFNOSUPPORT;
    int fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    int mtu = 0;
    socklen_t size = sizeof(mtu);
    int rc = connect(fd, (struct sockaddr *)&address, length);
    if (rc == 0) {
        rc = family == AF_INET ? getsockopt(fd, IPPROTO_IP, IP_MTU, &mtu, &size)
                               : getsockopt(fd, IPPROTO_IPV6, IPV6_MTU, &mtu, &size);
    }
    int err = errno;
    close(fd);
    if (rc != 0) return -err;
    int headers = family == AF_INET ? 20 + 8 : 40 + 8;
    return mtu > headers ? mtu - headers : -EMSGSIZE;
}
