// ember-python-zygote: a Python interpreter initialised once, as `python3 -I -S -u` would be,
// with Ember's shim (bootstrap.py) imported and warmed, that then serves the daemon's spawn
// requests exactly as the spawner helper does. Each child is cloned with the helper's own code:
// new user, pid, mount, ipc and uts namespaces, its network namespace, cgroup, root, uid,
// capabilities dropped, rlimits and seccomp. Only the last step differs: instead of executing
// python3, the child continues in the interpreter it already holds and runs the shim's main
// loop. A child thus costs a clone and the sandbox's set-up, not an interpreter's start, and
// shares the zygote's pages until it writes them.
//
// Started by the daemon (Spawner::start_zygote): its socket is descriptor 3 and the seccomp
// program descriptor 4; arguments: max_open_files, the number of instructions of the seccomp
// program, the python3 it stands for, the shim's folder.
#include <Python.h>
#include <limits.h>
#include <linux/filter.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ember/sandbox/spawner.h"

namespace {

PyObject* g_shim = nullptr;  // the bootstrap module

void before_clone() { PyOS_BeforeFork(); }
void after_clone() { PyOS_AfterFork_Parent(); }

// In the child, sandboxed: the request's environment becomes os.environ, and the shim's main
// loop runs as it would in a python3 started for the worker.
void run(char* const* /*argv*/, char* const* envp) {
  PyOS_AfterFork_Child();
  // What execve would have done: the kernel made the process undumpable when it switched to the
  // worker's uid, which leaves its /proc files to root; an executed python3 is dumpable again.
  ::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  ::prctl(PR_SET_NAME, "python3");
  PyObject* env = PyDict_New();
  for (char* const* e = envp; env && *e; ++e) {
    const char* eq = std::strchr(*e, '=');
    if (!eq) continue;
    PyObject* name = PyUnicode_DecodeFSDefaultAndSize(*e, eq - *e);
    PyObject* value = PyUnicode_DecodeFSDefault(eq + 1);
    if (name && value) PyDict_SetItem(env, name, value);
    Py_XDECREF(name);
    Py_XDECREF(value);
  }
  PyErr_Clear();  // an entry that cannot be decoded is left out, as python3 would
  PyObject* code = env ? PyObject_CallMethod(g_shim, "zygote_child", "O", env) : nullptr;
  int status = 1;
  if (code) {
    status = code == Py_None ? 0 : static_cast<int>(PyLong_AsLong(code));
    if (PyErr_Occurred()) {
      PyErr_Clear();
      status = 1;
    }
  } else {
    PyErr_Print();  // SystemExit ends the process here, with its code
  }
  Py_Exit(status);
}

bool read_all(int fd, std::vector<sock_filter>& out) {
  std::vector<char> bytes;
  char buf[4096];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) break;
    bytes.insert(bytes.end(), buf, buf + n);
  }
  if (bytes.size() % sizeof(sock_filter) != 0) return false;
  out.resize(bytes.size() / sizeof(sock_filter));
  if (!bytes.empty()) std::memcpy(out.data(), bytes.data(), bytes.size());
  return true;
}

// The C library keeps each thread's id in its thread descriptor, and raise(), abort() and
// pthread_kill() on oneself use it. fork() has the kernel write the child's id there; a clone
// made by the helper must ask for the same (ChildEntry::child_tid). The field is found as the
// one word of the descriptor's first page holding this thread's id; not found, or found twice,
// the children keep the zygote's (and raise() in them fails).
pid_t* thread_id_field() {
  const pid_t tid = static_cast<pid_t>(::syscall(SYS_gettid));
  auto* self = reinterpret_cast<pid_t*>(::pthread_self());
  pid_t* found = nullptr;
  for (size_t i = 0; i < 1024 / sizeof(pid_t); ++i) {
    if (self[i] != tid) continue;
    if (found) return nullptr;
    found = &self[i];
  }
  return found;
}

bool check(PyStatus status) {
  if (!PyStatus_Exception(status)) return true;
  std::fprintf(stderr, "ember-python-zygote: %s: %s\n", status.func ? status.func : "python",
               status.err_msg ? status.err_msg : "error");
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr,
                 "usage: %s MAX_OPEN_FILES SECCOMP_INSTRUCTIONS PYTHON3 SHIM_DIR (started by "
                 "emberd)\n",
                 argv[0]);
    return 2;
  }
  ::prctl(PR_SET_NAME, "ember-zygote");  // from the start: tools tell it from the workers
  const pid_t daemon_pid = ::getppid();
  ember::sandbox::Confinement confinement;
  confinement.max_open_files = std::strtoul(argv[1], nullptr, 10);
  std::vector<sock_filter> program;
  // Not one instruction less than the daemon compiled: a program lost on the way must not
  // leave the workers without seccomp.
  if (!read_all(4, program) || program.size() != std::strtoul(argv[2], nullptr, 10)) {
    std::fprintf(stderr, "ember-python-zygote: cannot read the seccomp program\n");
    return 1;
  }
  ::close(4);
  if (!program.empty()) {
    confinement.seccomp.emplace();
    confinement.seccomp->instructions = std::move(program);
  }

  // The interpreter linked here must be the one workers would otherwise start.
  char real[PATH_MAX];
  const std::string wanted =
      "python" + std::to_string(PY_MAJOR_VERSION) + "." + std::to_string(PY_MINOR_VERSION);
  if (!::realpath(argv[3], real) || std::strrchr(real, '/') == nullptr ||
      wanted != std::strrchr(real, '/') + 1) {
    std::fprintf(stderr, "ember-python-zygote: %s is not %s, which this zygote embeds\n", argv[3],
                 wanted.c_str());
    return 1;
  }

  // As `python3 -I -S -u` started with LANG=C.UTF-8 (its environment) would be: isolated, no
  // site, unbuffered (C stdio too), the locale from the environment, Python's signal handlers
  // (SIGINT raises KeyboardInterrupt; SIGPIPE and SIGXFSZ are ignored, here too, so that a
  // write to a child that died is an error, not this process's end).
  PyPreConfig preconfig;
  PyPreConfig_InitIsolatedConfig(&preconfig);
  preconfig.configure_locale = 1;
  if (!check(Py_PreInitialize(&preconfig))) return 1;
  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.site_import = 0;
  config.buffered_stdio = 0;
  config.configure_c_stdio = 1;
  config.install_signal_handlers = 1;
  config.write_bytecode = 0;  // nothing written into the runtimes folder
  config.parse_argv = 0;
  const std::string shim = std::string(argv[4]) + "/bootstrap.py";
  char* shim_argv[] = {const_cast<char*>(shim.c_str())};
  bool ok = check(PyConfig_SetBytesString(&config, &config.program_name, argv[3])) &&
            check(PyConfig_SetBytesString(&config, &config.executable, argv[3])) &&
            check(PyConfig_SetBytesArgv(&config, 1, shim_argv)) &&
            check(Py_InitializeFromConfig(&config));
  PyConfig_Clear(&config);
  if (!ok) return 1;
  // The shim's folder goes last, so that no file in it can stand in for a module of the
  // standard library; the children remove it (bootstrap.zygote_child).
  PyObject* path = PySys_GetObject("path");  // borrowed
  PyObject* dir = PyUnicode_DecodeFSDefault(argv[4]);
  if (!path || !dir || PyList_Append(path, dir) != 0) {
    PyErr_Print();
    return 1;
  }
  Py_DECREF(dir);
  g_shim = PyImport_ImportModule("bootstrap");
  PyObject* prepared = g_shim ? PyObject_CallMethod(g_shim, "zygote_prepare", nullptr) : nullptr;
  if (!prepared) {
    PyErr_Print();
    return 1;
  }
  Py_DECREF(prepared);
  static const ember::sandbox::ChildEntry entry{before_clone, after_clone, run, thread_id_field()};
  // Ready: the daemon waits for this byte before it sends the first request.
  if (::send(3, "R", 1, MSG_NOSIGNAL) != 1) return 1;
  ember::sandbox::serve_spawn_requests(3, daemon_pid, confinement, &entry);
}
