# Install layout and the Debian package (docs/operations.md):
#   bin/emberd                          the daemon
#   share/ember/runtimes/{node,python}  the runtime shims, found next to the installed binary
#   lib/systemd/system/emberd.service   the unit, disabled
#   /etc/ember/emberd.json              the default configuration (a conffile in the .deb)
#   share/doc/ember/                    README and docs/
install(DIRECTORY ${PROJECT_SOURCE_DIR}/runtimes/
        DESTINATION ${CMAKE_INSTALL_DATADIR}/ember/runtimes
        PATTERN "__pycache__" EXCLUDE
        PATTERN "*.pyc" EXCLUDE)

# The unit names the installed binary and config, so it is written at install time, when the
# prefix is known (cpack installs with /usr, `cmake --install` with CMAKE_INSTALL_PREFIX). As
# GNUInstallDirs does, the configuration goes to /etc for the /usr prefix, else PREFIX/etc.
install(CODE "
  set(EMBER_PREFIX \"\${CMAKE_INSTALL_PREFIX}\")
  set(EMBER_BINDIR \"\${EMBER_PREFIX}/${CMAKE_INSTALL_BINDIR}\")
  set(EMBER_DOCDIR \"\${EMBER_PREFIX}/${CMAKE_INSTALL_DOCDIR}\")
  if(EMBER_PREFIX STREQUAL \"/usr\")
    set(EMBER_SYSCONFDIR /etc)
  else()
    set(EMBER_SYSCONFDIR \"\${EMBER_PREFIX}/etc\")
  endif()
  configure_file(\"${PROJECT_SOURCE_DIR}/packaging/systemd/emberd.service\"
                 \"${PROJECT_BINARY_DIR}/packaging/emberd.service\" @ONLY)
  file(INSTALL \"${PROJECT_BINARY_DIR}/packaging/emberd.service\"
       DESTINATION \"\${EMBER_PREFIX}/lib/systemd/system\")
  file(INSTALL \"${PROJECT_SOURCE_DIR}/packaging/emberd.json\"
       DESTINATION \"\${EMBER_SYSCONFDIR}/ember\")
")
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/docs/ DESTINATION ${CMAKE_INSTALL_DOCDIR})
# The HAProxy front of several nodes (docs/scale-out.md), to copy and edit.
install(FILES ${PROJECT_SOURCE_DIR}/packaging/haproxy/ember.cfg
        DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples RENAME haproxy.cfg)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ember)
set(CPACK_PACKAGE_VENDOR "Ember")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "single-node function-as-a-service daemon")
set(CPACK_PACKAGE_CONTACT "Ember maintainers <root@localhost>")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
# Library dependencies come from the binary (dpkg-shlibdeps); the maintainer scripts need adduser.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "nodejs, python3")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_SOURCE_DIR}/packaging/debian/postinst
    ${PROJECT_SOURCE_DIR}/packaging/debian/prerm
    ${PROJECT_SOURCE_DIR}/packaging/debian/postrm
    ${PROJECT_SOURCE_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)
include(CPack)
