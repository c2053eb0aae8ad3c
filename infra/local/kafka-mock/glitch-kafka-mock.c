/*
 * glitch-kafka-mock: a tiny launcher around librdkafka's mock cluster
 * (rd_kafka_mock_cluster_new), used by the test harness where no Docker engine
 * is available. Built on first use by infra/local/src/kafka-mock.ts:
 *
 *   gcc -O2 -Wall -Wextra -Werror -o glitch-kafka-mock glitch-kafka-mock.c -lrdkafka -ldl
 *
 * Usage:
 *   glitch-kafka-mock [--brokers N] [--port P] [--control-port P]
 *                     [--topic name:partitions]... [--ignore-stdin]
 *
 * Prints exactly one line on stdout once the cluster is up:
 *   READY <bootstrap> <control-port>
 *
 * Control: line protocol on 127.0.0.1:<control-port> and on stdin (replies to
 * stdin commands go to stdout). Commands:
 *   ping                      -> pong
 *   topic <name> <partitions> -> ok | err <msg>
 *   down <brokerId|all>       -> ok | err <msg>   (rd_kafka_mock_broker_set_down)
 *   up <brokerId|all>         -> ok | err <msg>   (rd_kafka_mock_broker_set_up)
 *     In 2.0.2, down closes the broker's connections and its listener (clients
 *     get ECONNREFUSED); up listens again on the same port. Data is kept.
 *   bootstrap                 -> ok <bootstrap>
 *   version                   -> ok <librdkafka version>
 *   quit                      -> ok, then exit 0
 * EOF on stdin exits (the launcher dies with its parent) unless --ignore-stdin.
 *
 * Fixed port (--port): librdkafka 2.0.2 binds every mock broker listener to
 * 127.0.0.1:0 and offers no option to choose the port. This executable defines
 * bind() itself; librdkafka's call resolves to it (the executable comes first
 * in the global symbol scope), and the first bind to 127.0.0.1:0 while armed
 * gets the wanted port instead. librdkafka sets SO_REUSEADDR on the listener
 * before binding (checked at runtime; set here if it ever is not), so a
 * restarted mock can rebind the port while old connections sit in TIME_WAIT.
 * If the port is taken, exit 3 with a message (librdkafka 2.0.2 would abort()
 * in its own cleanup path after a failed bind).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define MAX_CLIENTS 64
#define LINE_MAX_LEN 1024

/* ---------------------------------------------------------------- bind() */

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

static bind_fn real_bind_fn(void) {
        static bind_fn real;
        if (!real)
                real = (bind_fn)dlsym(RTLD_NEXT, "bind");
        return real;
}

/* Port to substitute into the next bind(127.0.0.1:0); 0 = disarmed. */
static int wanted_port = 0;
/* Set once a substitution happened, so main() can prove interposition works. */
static int fixed_port_applied = 0;
/* What we saw on the listener socket: 1 = librdkafka set SO_REUSEADDR. */
static int reuseaddr_was_set = -1;

int bind(int fd, const struct sockaddr *addr, socklen_t len) {
        bind_fn real = real_bind_fn();
        if (!real) {
                errno = ENOSYS;
                return -1;
        }
        if (addr && len >= (socklen_t)sizeof(struct sockaddr_in) &&
            addr->sa_family == AF_INET) {
                const struct sockaddr_in *sin = (const struct sockaddr_in *)addr;
                if (sin->sin_addr.s_addr == htonl(INADDR_LOOPBACK) &&
                    sin->sin_port == 0) {
                        int port = __atomic_exchange_n(&wanted_port, 0,
                                                       __ATOMIC_SEQ_CST);
                        if (port) {
                                struct sockaddr_in copy = *sin;
                                int on = 0;
                                socklen_t olen = sizeof(on);
                                if (getsockopt(fd, SOL_SOCKET, SO_REUSEADDR,
                                               &on, &olen) == 0)
                                        reuseaddr_was_set = on ? 1 : 0;
                                if (!on) {
                                        on = 1;
                                        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR,
                                                   &on, sizeof(on));
                                }
                                copy.sin_port = htons((uint16_t)port);
                                fixed_port_applied = 1;
                                if (real(fd, (const struct sockaddr *)&copy,
                                         sizeof(copy)) == 0)
                                        return 0;
                                /* librdkafka 2.0.2 asserts (abort) on its
                                 * own cleanup path after a failed bind, so
                                 * report and leave before that. */
                                fprintf(stderr,
                                        "glitch-kafka-mock: error: cannot bind "
                                        "broker 1 to 127.0.0.1:%d: %s\n",
                                        port, strerror(errno));
                                _exit(3);
                        }
                }
        }
        return real(fd, addr, len);
}

/* ---------------------------------------------------------------- state */

static rd_kafka_t *rk;
static rd_kafka_mock_cluster_t *mcluster;
static int broker_cnt = 1;
static char bootstrap[4096];

struct client {
        int fd;
        size_t len;
        char buf[LINE_MAX_LEN];
};

static void die(const char *fmt, ...) {
        va_list ap;
        fprintf(stderr, "glitch-kafka-mock: error: ");
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputc('\n', stderr);
        exit(2);
}

static void log_cb(const rd_kafka_t *rk_, int level, const char *fac,
                   const char *msg) {
        (void)rk_;
        /* The bookkeeping producer has no bootstrap.servers on purpose. */
        if (!strcmp(fac, "CONFWARN") && strstr(msg, "bootstrap.servers"))
                return;
        fprintf(stderr, "glitch-kafka-mock: librdkafka %d %s: %s\n", level, fac,
                msg);
}

static int valid_topic_name(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > 249 || !strcmp(s, ".") || !strcmp(s, ".."))
                return 0;
        for (; *s; s++) {
                char c = *s;
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                      (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                      c == '-'))
                        return 0;
        }
        return 1;
}

static int parse_int(const char *s, long min, long max, long *out) {
        char *end;
        long v;
        if (!s || !*s)
                return 0;
        errno = 0;
        v     = strtol(s, &end, 10);
        if (errno || *end || v < min || v > max)
                return 0;
        *out = v;
        return 1;
}

static int create_topic(const char *name, long partitions, char *err,
                        size_t errsz) {
        rd_kafka_resp_err_t e;
        if (!valid_topic_name(name)) {
                snprintf(err, errsz, "invalid topic name");
                return -1;
        }
        if (partitions < 1 || partitions > 10000) {
                snprintf(err, errsz, "invalid partition count");
                return -1;
        }
        /* Replication factor only shapes metadata (replicas/ISR); the mock
         * never fails over, so keep it like a small real cluster. */
        e = rd_kafka_mock_topic_create(mcluster, name, (int)partitions,
                                       broker_cnt < 3 ? broker_cnt : 3);
        if (e) {
                snprintf(err, errsz, "%s: %s", rd_kafka_err2name(e),
                         rd_kafka_err2str(e));
                return -1;
        }
        return 0;
}

/* Handles one command line; writes the reply (with '\n') into out.
 * Returns 1 if the process should exit after replying. */
static int handle_command(char *line, char *out, size_t outsz) {
        char *argv[4];
        int argc = 0;
        char *save = NULL, *tok;
        char err[256];
        long v;

        for (tok = strtok_r(line, " \t\r", &save); tok && argc < 4;
             tok = strtok_r(NULL, " \t\r", &save))
                argv[argc++] = tok;

        if (argc == 0) {
                snprintf(out, outsz, "err empty command\n");
                return 0;
        }
        if (!strcmp(argv[0], "ping") && argc == 1) {
                snprintf(out, outsz, "pong\n");
        } else if (!strcmp(argv[0], "bootstrap") && argc == 1) {
                snprintf(out, outsz, "ok %s\n", bootstrap);
        } else if (!strcmp(argv[0], "version") && argc == 1) {
                snprintf(out, outsz, "ok %s\n", rd_kafka_version_str());
        } else if (!strcmp(argv[0], "quit") && argc == 1) {
                snprintf(out, outsz, "ok\n");
                return 1;
        } else if (!strcmp(argv[0], "topic")) {
                if (argc != 3 || !parse_int(argv[2], 1, 10000, &v))
                        snprintf(out, outsz,
                                 "err usage: topic <name> <partitions>\n");
                else if (create_topic(argv[1], v, err, sizeof(err)))
                        snprintf(out, outsz, "err %s\n", err);
                else
                        snprintf(out, outsz, "ok\n");
        } else if (!strcmp(argv[0], "down") || !strcmp(argv[0], "up")) {
                int down = argv[0][0] == 'd';
                rd_kafka_resp_err_t e;
                if (argc != 2) {
                        snprintf(out, outsz, "err usage: %s <brokerId|all>\n",
                                 argv[0]);
                        return 0;
                }
                if (!strcmp(argv[1], "all"))
                        v = -1;
                else if (!parse_int(argv[1], 1, broker_cnt, &v)) {
                        snprintf(out, outsz, "err unknown broker %s\n",
                                 argv[1]);
                        return 0;
                }
                e = down ? rd_kafka_mock_broker_set_down(mcluster, (int32_t)v)
                         : rd_kafka_mock_broker_set_up(mcluster, (int32_t)v);
                if (e)
                        snprintf(out, outsz, "err %s\n", rd_kafka_err2name(e));
                else
                        snprintf(out, outsz, "ok\n");
        } else if (!strcmp(argv[0], "errors")) {
                /* errors <apiKey> <errorCode>...: the next requests of that
                 * API, from any client, are answered with these errors, one
                 * each, in order (fault injection for tests). */
                rd_kafka_resp_err_t errs[16];
                int i;
                long api;
                if (argc < 3 || argc - 2 > 16 ||
                    !parse_int(argv[1], 0, 1000, &api)) {
                        snprintf(out, outsz,
                                 "err usage: errors <apiKey> <errorCode>... "
                                 "(at most 16)\n");
                        return 0;
                }
                for (i = 2; i < argc; i++) {
                        if (!parse_int(argv[i], 1, 1000, &v)) {
                                snprintf(out, outsz, "err bad error code %s\n",
                                         argv[i]);
                                return 0;
                        }
                        errs[i - 2] = (rd_kafka_resp_err_t)v;
                }
                rd_kafka_mock_push_request_errors_array(
                    mcluster, (int16_t)api, (size_t)(argc - 2), errs);
                snprintf(out, outsz, "ok\n");
        } else {
                snprintf(out, outsz, "err unknown command %s\n", argv[0]);
        }
        return 0;
}

static void write_all(int fd, const char *s) {
        size_t n = strlen(s);
        while (n > 0) {
                ssize_t w = write(fd, s, n);
                if (w < 0) {
                        if (errno == EINTR)
                                continue;
                        return; /* peer went away; nothing to do */
                }
                s += w;
                n -= (size_t)w;
        }
}

/* Reads available bytes into c and executes complete lines.
 * Returns -1 on EOF/error (close the client), 1 on quit, 0 otherwise. */
static int client_read(struct client *c, int outfd) {
        char out[4200];
        ssize_t r = read(c->fd, c->buf + c->len, sizeof(c->buf) - c->len);
        if (r < 0 && (errno == EINTR || errno == EAGAIN))
                return 0;
        if (r <= 0)
                return -1;
        c->len += (size_t)r;
        for (;;) {
                char *nl = memchr(c->buf, '\n', c->len);
                size_t linelen;
                int quit;
                if (!nl) {
                        if (c->len == sizeof(c->buf)) {
                                write_all(outfd, "err line too long\n");
                                return -1;
                        }
                        return 0;
                }
                *nl     = '\0';
                linelen = (size_t)(nl - c->buf) + 1;
                quit    = handle_command(c->buf, out, sizeof(out));
                write_all(outfd, out);
                memmove(c->buf, c->buf + linelen, c->len - linelen);
                c->len -= linelen;
                if (quit)
                        return 1;
        }
}

static void usage(void) {
        fprintf(stderr,
                "usage: glitch-kafka-mock [--brokers N] [--port P] "
                "[--control-port P] [--topic name:partitions]... "
                "[--ignore-stdin]\n");
        exit(2);
}

int main(int argc, char **argv) {
        long port = 0, control_port = 0, v;
        int ignore_stdin = 0;
        char errstr[512];
        rd_kafka_conf_t *conf;
        int ctl_fd, sig_fd, on = 1, i;
        struct sockaddr_in sin;
        socklen_t sinlen = sizeof(sin);
        sigset_t mask;
        struct client clients[MAX_CLIENTS];
        struct client stdin_client = {.fd = 0, .len = 0};
        int nclients = 0, running = 1;

        /* Die with the parent even if it is SIGKILLed and stdin stays open. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        signal(SIGPIPE, SIG_IGN);

        /* Block the signals before librdkafka starts threads, then read them
         * synchronously from a signalfd in the poll loop. */
        sigemptyset(&mask);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGHUP);
        sigprocmask(SIG_BLOCK, &mask, NULL);
        sig_fd = signalfd(-1, &mask, SFD_CLOEXEC);
        if (sig_fd < 0)
                die("signalfd: %s", strerror(errno));

        /* First pass: options that must be known before the cluster exists. */
        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
                        if (!parse_int(argv[++i], 1, 32, &v))
                                die("--brokers must be 1..32");
                        broker_cnt = (int)v;
                } else if (!strcmp(argv[i], "--port") && i + 1 < argc) {
                        if (!parse_int(argv[++i], 0, 65535, &port))
                                die("--port must be 0..65535");
                } else if (!strcmp(argv[i], "--control-port") && i + 1 < argc) {
                        if (!parse_int(argv[++i], 0, 65535, &control_port))
                                die("--control-port must be 0..65535");
                } else if (!strcmp(argv[i], "--topic") && i + 1 < argc) {
                        i++; /* handled after the cluster starts */
                } else if (!strcmp(argv[i], "--ignore-stdin")) {
                        ignore_stdin = 1;
                } else {
                        usage();
                }
        }

        conf = rd_kafka_conf_new();
        rd_kafka_conf_set_log_cb(conf, log_cb);
        rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
        if (!rk)
                die("rd_kafka_new: %s", errstr);

        /* Broker 1's listener is created first, inside this call. */
        __atomic_store_n(&wanted_port, (int)port, __ATOMIC_SEQ_CST);
        mcluster = rd_kafka_mock_cluster_new(rk, broker_cnt);
        __atomic_store_n(&wanted_port, 0, __ATOMIC_SEQ_CST);
        if (!mcluster)
                die("rd_kafka_mock_cluster_new failed (port %ld in use?)", port);
        snprintf(bootstrap, sizeof(bootstrap), "%s",
                 rd_kafka_mock_cluster_bootstraps(mcluster));

        if (port) {
                char expect[64];
                if (!fixed_port_applied)
                        die("bind() interposition did not take effect");
                snprintf(expect, sizeof(expect), "127.0.0.1:%ld", port);
                if (strncmp(bootstrap, expect, strlen(expect)) ||
                    (bootstrap[strlen(expect)] != '\0' &&
                     bootstrap[strlen(expect)] != ','))
                        die("broker 1 is not on port %ld: %s", port, bootstrap);
                if (reuseaddr_was_set != 1)
                        fprintf(stderr,
                                "glitch-kafka-mock: note: librdkafka did not "
                                "set SO_REUSEADDR; set it here\n");
        }

        for (i = 1; i < argc; i++) {
                if (!strcmp(argv[i], "--topic")) {
                        char *spec = argv[++i], *colon = strrchr(spec, ':');
                        if (!colon || !parse_int(colon + 1, 1, 10000, &v))
                                die("--topic wants name:partitions, got %s",
                                    spec);
                        *colon = '\0';
                        if (create_topic(spec, v, errstr, sizeof(errstr)))
                                die("topic %s: %s", spec, errstr);
                } else if (!strcmp(argv[i], "--brokers") ||
                           !strcmp(argv[i], "--port") ||
                           !strcmp(argv[i], "--control-port")) {
                        i++;
                }
        }

        ctl_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (ctl_fd < 0)
                die("control socket: %s", strerror(errno));
        setsockopt(ctl_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        memset(&sin, 0, sizeof(sin));
        sin.sin_family      = AF_INET;
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        sin.sin_port        = htons((uint16_t)control_port);
        /* Straight to libc: the control port is never the broker port. */
        if (real_bind_fn()(ctl_fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
                die("control bind 127.0.0.1:%ld: %s", control_port,
                    strerror(errno));
        if (listen(ctl_fd, 16) < 0)
                die("control listen: %s", strerror(errno));
        if (getsockname(ctl_fd, (struct sockaddr *)&sin, &sinlen) < 0)
                die("control getsockname: %s", strerror(errno));

        printf("READY %s %d\n", bootstrap, ntohs(sin.sin_port));
        fflush(stdout);

        while (running) {
                struct pollfd pfds[3 + MAX_CLIENTS];
                int n = 0, base;
                pfds[n++] = (struct pollfd){.fd = sig_fd, .events = POLLIN};
                pfds[n++] = (struct pollfd){.fd = ctl_fd, .events = POLLIN};
                pfds[n++] = (struct pollfd){.fd = ignore_stdin ? -1 : 0,
                                            .events = POLLIN};
                base      = n;
                for (i = 0; i < nclients; i++)
                        pfds[n++] =
                            (struct pollfd){.fd = clients[i].fd, .events = POLLIN};

                if (poll(pfds, (nfds_t)n, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        die("poll: %s", strerror(errno));
                }

                if (pfds[0].revents) /* SIGTERM/SIGINT/SIGHUP: clean stop */
                        break;

                if (pfds[2].revents) {
                        int r = client_read(&stdin_client, 1);
                        if (r != 0) /* EOF: the parent is gone; or quit */
                                break;
                }

                /* Clients, newest first so removal by swap is safe. */
                for (i = nclients - 1; i >= 0; i--) {
                        int r;
                        if (!pfds[base + i].revents)
                                continue;
                        r = client_read(&clients[i], clients[i].fd);
                        if (r == 1)
                                running = 0;
                        if (r != 0) {
                                close(clients[i].fd);
                                clients[i] = clients[--nclients];
                        }
                }

                if (running && pfds[1].revents) {
                        int cfd = accept4(ctl_fd, NULL, NULL, SOCK_CLOEXEC);
                        if (cfd >= 0) {
                                if (nclients == MAX_CLIENTS) {
                                        write_all(cfd, "err too many clients\n");
                                        close(cfd);
                                } else {
                                        clients[nclients].fd  = cfd;
                                        clients[nclients].len = 0;
                                        nclients++;
                                }
                        }
                }
        }

        for (i = 0; i < nclients; i++)
                close(clients[i].fd);
        close(ctl_fd);
        rd_kafka_mock_cluster_destroy(mcluster);
        rd_kafka_destroy(rk);
        return 0;
}
