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
// program descriptor 4; arguments: max_open_files, the python3 it stands for, the shim's folder.
#include <Python.h>
#include <linux/filter.h>
#include <sys/prctl.h>
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
  PyObject* code = env ? PyObject_CallMethod(g_shim, "zygote_child", "O", env) : nullptr;
  int status = 1;
  if (code) {
    status = code == Py_None ? 0 : static_cast<int>(PyLong_AsLong(code));
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

bool check(PyStatus status) {
  if (!PyStatus_Exception(status)) return true;
  std::fprintf(stderr, "ember-python-zygote: %s: %s\n", status.func ? status.func : "python",
               status.err_msg ? status.err_msg : "error");
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s MAX_OPEN_FILES PYTHON3 SHIM_DIR (started by emberd)\n",
                 argv[0]);
    return 2;
  }
  ::prctl(PR_SET_NAME, "ember-zygote");  // from the start: tools tell it from the workers
  const pid_t daemon_pid = ::getppid();
  ember::sandbox::Confinement confinement;
  confinement.max_open_files = std::strtoul(argv[1], nullptr, 10);
  std::vector<sock_filter> program;
  if (!read_all(4, program)) {
    std::fprintf(stderr, "ember-python-zygote: cannot read the seccomp program\n");
    return 1;
  }
  ::close(4);
  if (!program.empty()) {
    confinement.seccomp.emplace();
    confinement.seccomp->instructions = std::move(program);
  }

  // As `python3 -I -S -u` in UTF-8 mode: what a python worker's command line asks.
  PyPreConfig preconfig;
  PyPreConfig_InitIsolatedConfig(&preconfig);
  preconfig.utf8_mode = 1;
  if (!check(Py_PreInitialize(&preconfig))) return 1;
  PyConfig config;
  PyConfig_InitIsolatedConfig(&config);
  config.site_import = 0;
  config.buffered_stdio = 0;
  config.write_bytecode = 0;  // nothing written into the runtimes folder
  config.parse_argv = 0;
  const std::string shim = std::string(argv[3]) + "/bootstrap.py";
  char* shim_argv[] = {const_cast<char*>(shim.c_str())};
  bool ok = check(PyConfig_SetBytesString(&config, &config.program_name, argv[2])) &&
            check(PyConfig_SetBytesString(&config, &config.executable, argv[2])) &&
            check(PyConfig_SetBytesArgv(&config, 1, shim_argv)) &&
            check(Py_InitializeFromConfig(&config));
  PyConfig_Clear(&config);
  if (!ok) return 1;
  PyObject* path = PySys_GetObject("path");  // borrowed
  PyObject* dir = PyUnicode_DecodeFSDefault(argv[3]);
  if (!path || !dir || PyList_Insert(path, 0, dir) != 0) {
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
  static const ember::sandbox::ChildEntry entry{before_clone, after_clone, run};
  ember::sandbox::serve_spawn_requests(3, daemon_pid, confinement, &entry);
}
