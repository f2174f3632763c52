# Enforces CONTRIBUTING.md's dependency rules at configure time: which of our folders a folder's
# sources may #include from. A violation fails the configure with the offending line.
#   proto/     -> include/ only (and its own internal headers)
#   driver/    -> include/cbt_shared.h only (the one plain-C header shared with agent/)
#   agent/     -> include/, its own headers, the driver's skeleton
#   appliance/ -> include/ and its own headers
function(rpl_check_includes DIR)
  cmake_parse_arguments(ARG "" "" "FORBID" ${ARGN})
  file(GLOB_RECURSE files ${CMAKE_SOURCE_DIR}/${DIR}/*.c ${CMAKE_SOURCE_DIR}/${DIR}/*.h)
  foreach(f ${files})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
    foreach(l ${lines})
      foreach(bad ${ARG_FORBID})
        if(l MATCHES "${bad}")
          message(FATAL_ERROR "dependency rule broken in ${f}: '${l}' (see CONTRIBUTING.md)")
        endif()
      endforeach()
    endforeach()
  endforeach()
endfunction()

rpl_check_includes(proto     FORBID "\\.\\./(agent|appliance|driver)/" "\"(agent|appliance|driver)/")
rpl_check_includes(agent     FORBID "\\.\\./appliance/" "\"appliance/")
rpl_check_includes(appliance FORBID "\\.\\./(agent|driver)/" "\"(agent|driver)/")
# driver/ may include exactly one header of ours: cbt_shared.h
file(GLOB driver_files ${CMAKE_SOURCE_DIR}/driver/*.c ${CMAKE_SOURCE_DIR}/driver/*.h)
foreach(f ${driver_files})
  file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"")
  foreach(l ${lines})
    if(NOT l MATCHES "\"(cbt_shared\\.h|vmlinux_min\\.h)\"")
      message(FATAL_ERROR "driver/ may include only cbt_shared.h of ours (and its own vmlinux_min.h): ${f}: '${l}'")
    endif()
  endforeach()
endforeach()
