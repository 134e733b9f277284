# One INTERFACE target with the warning, hardening and sanitizer flags that
# every first-party target links PRIVATE.
add_library(wbs_build_flags INTERFACE)
target_compile_options(wbs_build_flags INTERFACE
  -Wall -Wextra -Wformat=2 -Wshadow -Wstrict-prototypes -Wmissing-prototypes
  -Wold-style-definition -Wpointer-arith -Wwrite-strings -Wundef -Wvla
  -Wimplicit-fallthrough -Werror=implicit-function-declaration
  $<$<BOOL:${WBS_WERROR}>:-Werror>
  $<$<CONFIG:Release,RelWithDebInfo,MinSizeRel>:-D_FORTIFY_SOURCE=2>
  -fstack-protector-strong)
target_link_options(wbs_build_flags INTERFACE
  -Wl,-z,relro -Wl,-z,now -Wl,-z,noexecstack)
if(WBS_SANITIZE)
  target_compile_options(wbs_build_flags INTERFACE
    -fsanitize=${WBS_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=all)
  target_link_options(wbs_build_flags INTERFACE -fsanitize=${WBS_SANITIZE})
endif()
