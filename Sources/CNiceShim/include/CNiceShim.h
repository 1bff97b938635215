#ifndef UGATE_CNICESHIM_H
#define UGATE_CNICESHIM_H
#include <nice/agent.h>

/// g_signal_connect is a macro; Swift cannot import it.
gulong ugate_g_signal_connect(gpointer instance, const gchar *signal, GCallback handler, gpointer data);

/// g_object_set is variadic; these set one typed property.
void ugate_g_object_set_boolean(gpointer object, const gchar *property, gboolean value);
void ugate_g_object_set_uint(gpointer object, const gchar *property, guint value);
void ugate_g_object_set_string(gpointer object, const gchar *property, const gchar *value);

#endif
