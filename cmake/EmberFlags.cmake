# Compiler flags shared by every Ember target, collected on one interface library.
add_library(ember_flags INTERFACE)
target_compile_options(ember_flags INTERFACE -Wall -Wextra -Werror -Wno-missing-field-initializers)
# GCC 12 flags Asio's coroutine frame operator delete as mismatched with its operator new
# (they do match: both are awaitable_frame_base's). Not raised by newer GCC or by Clang.
if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
  target_compile_options(ember_flags INTERFACE -Wno-mismatched-new-delete)
  # GCC 12 at -O3 reports impossible overlaps in std::string concatenation (GCC bug 105329).
  if(CMAKE_CXX_COMPILER_VERSION VERSION_LESS 13)
    target_compile_options(ember_flags INTERFACE -Wno-restrict)
  endif()
endif()
# Asio and Beast are compiled once in src/gateway/asio_impl.cc instead of in every translation unit.
target_compile_definitions(ember_flags INTERFACE
  BOOST_ASIO_SEPARATE_COMPILATION BOOST_BEAST_SEPARATE_COMPILATION BOOST_URL_NO_LIB
  BOOST_ASIO_NO_DEPRECATED)

# The sanitizer build (scripts/build asan) instruments every file Ember ships, with line tables
# for its reports (-g1: full debug information would cost a fifth of the build). The tests' own
# files (the EMBER_TEST_CODE property, tests/) are compiled plain and only linked with the
# runtimes: the daemon the end-to-end tests start is instrumented whole, the unit tests' modules
# are, and instrumenting the test code too would double the build's largest half.
if(EMBER_SANITIZE)
  set(ember_instrumented "$<NOT:$<BOOL:$<TARGET_PROPERTY:EMBER_TEST_CODE>>>")
  target_compile_options(ember_flags INTERFACE -g1 -fno-omit-frame-pointer
    "$<${ember_instrumented}:-fsanitize=address,undefined;-fno-sanitize-recover=all>")
  target_link_options(ember_flags INTERFACE -fsanitize=address,undefined)
endif()

# The fuzz build (scripts/build fuzz): every library instrumented for libFuzzer's coverage and
# checked by ASan and UBSan; only the fuzz targets link libFuzzer's main. Clang 14's
# -fsanitize=function cannot compile C++20 coroutines ("Cannot represent a difference across
# sections"), so that one check is off. EMBER_FUZZ_OPT is the optimisation level: -O1 for long
# runs, -O0 for CI's short smoke run (scripts/fuzz --quick), which builds in about half the time.
set(EMBER_FUZZ_OPT "-O1" CACHE STRING "Optimisation level of the fuzz build")
if(EMBER_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "EMBER_FUZZ needs Clang: CXX=clang++ (scripts/build fuzz sets it)")
  endif()
  target_compile_options(ember_flags INTERFACE ${EMBER_FUZZ_OPT} -gline-tables-only
    -fsanitize=address,undefined,fuzzer-no-link -fno-sanitize=function -fno-omit-frame-pointer
    -fno-sanitize-recover=all)
  target_link_options(ember_flags INTERFACE -fsanitize=address,undefined)
endif()

if(CMAKE_BUILD_TYPE STREQUAL "Release" AND NOT EMBER_SANITIZE)
  target_compile_definitions(ember_flags INTERFACE _FORTIFY_SOURCE=3 _GLIBCXX_ASSERTIONS)
  target_compile_options(ember_flags INTERFACE
    -fstack-protector-strong -fstack-clash-protection -fcf-protection -fPIE)
  target_link_options(ember_flags INTERFACE -pie -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack)
endif()

# Declares one module library: ember_module(NAME SOURCES ... DEPS ...).
function(ember_module name)
  cmake_parse_arguments(M "" "" "SOURCES;DEPS" ${ARGN})
  add_library(ember_${name} STATIC ${M_SOURCES})
  target_include_directories(ember_${name}
    PUBLIC ${PROJECT_SOURCE_DIR}/include
    PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
  target_link_libraries(ember_${name} PUBLIC ember_flags ${M_DEPS})
endfunction()
