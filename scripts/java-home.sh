# Sourced by the project's scripts: points JAVA_HOME at a JDK 22+ (Java 25 preferred).
# The machine's default java is 17, which cannot build this project, so never fall back to it.
find_jdk() {
  local candidate version
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/javac" ] || continue
    version=$("$candidate/bin/java" -XshowSettings:properties -version 2>&1 \
      | sed -n 's/^ *java.specification.version = \([0-9]*\).*/\1/p')
    if [ "${version:-0}" -ge 22 ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}
if ! JAVA_HOME=$(find_jdk); then
  echo "blocked: no JDK 22 or newer under /usr/lib/jvm (Java 25 expected at /usr/lib/jvm/temurin-25-jdk-amd64)" >&2
  exit 1
fi
export JAVA_HOME
export PATH="$JAVA_HOME/bin:$PATH"
# Maven 3.8 on Java 25 warns about sun.misc.Unsafe on every run; the warning is about Maven, not us.
export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"
