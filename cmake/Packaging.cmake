# Packaging.cmake - what the Debian packages mobility-agent and replication-appliance (and the agent's .rpm) hold, and how CPack builds them (scripts/package.sh).
#
# One package per install component: agent -> mobility-agent, appliance -> replication-appliance.
# Every install() rule without a COMPONENT belongs to replication-appliance
# (CMAKE_INSTALL_DEFAULT_COMPONENT_NAME, set at the top of the project), so the appliance's data
# files (e.g. web assets under ${CMAKE_INSTALL_DATADIR}/replication-appliance) are packaged without
# any change here. Included last, after every install() rule.
#
# Paths follow the units in packaging/systemd/: programs in /usr/bin (CPack's packaging prefix is
# /usr), configuration in /etc/default (absolute: the units name it), units in /lib/systemd/system
# (Debian 12's systemdsystemunitdir).
include(GNUInstallDirs)

set(RPL_DEB_DIR ${CMAKE_BINARY_DIR}/packaging)
set(RPL_DEB_MAINTAINER "Disk replication maintainers <maintainers@users.noreply.r-seed-c9b39611.example>")
set(RPL_DEB_REVISION 1)
set(RPL_UNIT_DIR /lib/systemd/system)

# rpl_package_files(COMPONENT PROGRAM): the files every package of ours carries besides its program:
# unit, default configuration, man page (gzip -9n, as Debian ships them), README, copyright,
# changelog.Debian.gz; and the control files CPack adds (maintainer scripts, conffiles).
function(rpl_package_files COMPONENT PROGRAM)
  set(src ${CMAKE_SOURCE_DIR}/packaging)
  set(out ${RPL_DEB_DIR}/${PROGRAM})
  file(MAKE_DIRECTORY ${out}/control)

  install(FILES ${src}/systemd/${PROGRAM}.service DESTINATION ${RPL_UNIT_DIR} COMPONENT ${COMPONENT})
  install(FILES ${src}/default/${PROGRAM} DESTINATION /etc/default COMPONENT ${COMPONENT})

  # The man page carries the project's version; compressed reproducibly (no name, no time stamp).
  configure_file(${src}/man/${PROGRAM}.8 ${out}/${PROGRAM}.8 @ONLY)
  add_custom_command(OUTPUT ${out}/${PROGRAM}.8.gz
                     COMMAND gzip -9nc ${out}/${PROGRAM}.8 > ${out}/${PROGRAM}.8.gz
                     DEPENDS ${out}/${PROGRAM}.8 VERBATIM)
  add_custom_target(${PROGRAM}-manpage ALL DEPENDS ${out}/${PROGRAM}.8.gz)
  install(FILES ${out}/${PROGRAM}.8.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man8 COMPONENT ${COMPONENT})

  # /usr/share/doc/PACKAGE: the README (the units' Documentation=), copyright, changelog.
  set(doc ${CMAKE_INSTALL_DATADIR}/doc/${PROGRAM})
  install(FILES ${CMAKE_SOURCE_DIR}/README.md DESTINATION ${doc} COMPONENT ${COMPONENT})
  file(WRITE ${out}/copyright
       "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
       "Upstream-Name: ${PROJECT_NAME}\n"
       "Comment: Built from the project's sources by scripts/package.sh (CPack).\n"
       "\n"
       "Files: *\n"
       "Copyright: 2026 the ${PROJECT_NAME} authors\n"
       "License: proprietary\n"
       " All rights reserved by the authors; no licence to redistribute is granted yet.\n")
  install(FILES ${out}/copyright DESTINATION ${doc} COMPONENT ${COMPONENT})
  file(WRITE ${out}/changelog.Debian
       "${PROGRAM} (${PROJECT_VERSION}-${RPL_DEB_REVISION}) unstable; urgency=medium\n"
       "\n"
       "  * Version ${PROJECT_VERSION}, packaged by the project (scripts/package.sh).\n"
       "\n"
       " -- ${RPL_DEB_MAINTAINER}  Sun, 29 Nov 2026 00:00:00 +0000\n")
  add_custom_command(OUTPUT ${out}/changelog.Debian.gz
                     COMMAND gzip -9nc ${out}/changelog.Debian > ${out}/changelog.Debian.gz
                     DEPENDS ${out}/changelog.Debian VERBATIM)
  add_custom_target(${PROGRAM}-changelog ALL DEPENDS ${out}/changelog.Debian.gz)
  install(FILES ${out}/changelog.Debian.gz DESTINATION ${doc} COMPONENT ${COMPONENT})

  # Control files: the maintainer scripts (packaging/debian/PROGRAM/) and conffiles.
  file(WRITE ${out}/control/conffiles "/etc/default/${PROGRAM}\n")
  set(control ${out}/control/conffiles)
  foreach(script postinst prerm postrm)
    configure_file(${src}/debian/${PROGRAM}/${script} ${out}/control/${script} COPYONLY)
    list(APPEND control ${out}/control/${script})
  endforeach()
  string(TOUPPER ${COMPONENT} C)
  set(CPACK_DEBIAN_${C}_PACKAGE_NAME ${PROGRAM} PARENT_SCOPE)
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_EXTRA "${control}" PARENT_SCOPE)
  set(CPACK_DEBIAN_${C}_PACKAGE_CONTROL_STRICT_PERMISSION TRUE PARENT_SCOPE)
endfunction()

install(TARGETS mobility-agent RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT agent)
install(TARGETS replication-appliance RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT appliance)
rpl_package_files(agent mobility-agent)
# A clean reboot without a resync: the early unit that resumes tracking, the hook that saves it.
install(FILES ${CMAKE_SOURCE_DIR}/packaging/systemd/mobility-agent-resume.service DESTINATION ${RPL_UNIT_DIR}
        COMPONENT agent)
install(PROGRAMS ${CMAKE_SOURCE_DIR}/packaging/shutdown/mobility-agent DESTINATION /lib/systemd/system-shutdown
        COMPONENT agent)
# The static agent carries zlib and names no shared library, on purpose: lintian is told so.
if(RPL_STATIC_AGENT)
  install(FILES ${CMAKE_SOURCE_DIR}/packaging/lintian/mobility-agent
          DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides COMPONENT agent)
endif()
# The agent's .rpm (scripts/package.sh runs rpmbuild on this spec with the agent's staged install).
configure_file(${CMAKE_SOURCE_DIR}/packaging/rpm/mobility-agent.spec.in
               ${RPL_DEB_DIR}/mobility-agent/mobility-agent.spec @ONLY)
rpl_package_files(appliance replication-appliance)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME ${PROJECT_NAME})
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_CONTACT ${RPL_DEB_MAINTAINER})
set(CPACK_PACKAGE_DIRECTORY ${CMAKE_BINARY_DIR}/cpack)
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEB_COMPONENT_INSTALL ON)
# Every component becomes a package: a third one (an install() rule naming a new component) shows
# up in dist/ instead of being dropped silently; scripts/package.sh accepts exactly our two.
set(CPACK_DEBIAN_PACKAGE_RELEASE ${RPL_DEB_REVISION})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
# Depends on the shared libraries from dpkg-shlibdeps (libssl, libcurl, ...): the appliance's; the
# agent is static (cmake/StaticAgent.cmake), so it gets none, unless built with RPL_STATIC_AGENT=OFF.
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_GENERATE_SHLIBS OFF)
set(CPACK_DEBIAN_APPLIANCE_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_AGENT_DESCRIPTION
"continuous block-level replication of a server's disks (source side)
The mobility agent tracks the blocks written to a server's disks with an
eBPF change-block tracker (no kernel module; the BPF object is built into
the program), reads changed extents with io_uring, compresses them with
zstd and streams them over mutually authenticated TLS 1.3 to a
replication appliance, which keeps them in Azure page blobs. Recovery
points freeze the filesystems for a filesystem-consistent copy.")
set(CPACK_DEBIAN_APPLIANCE_DESCRIPTION
"receives replicated disks and keeps them in Azure page blobs
The replication appliance registers mobility agents, orchestrates their
sync cycles against an RPO target, journals every cycle durably before
acknowledging it and uploads it into one page blob per disk over a
private endpoint, with sequence-number fencing. Committed recovery-point
cycles become blob snapshots; restore rebuilds a disk image from one.
It runs as its own unprivileged system user.")

include(CPack)
