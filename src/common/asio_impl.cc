// The one translation unit that compiles Asio, Beast and Boost.URL (header-only libraries built
// with *_SEPARATE_COMPILATION): every other file only includes their declarations.
#include <boost/asio/impl/src.hpp>
#include <boost/beast/src.hpp>
#include <boost/url/src.hpp>
