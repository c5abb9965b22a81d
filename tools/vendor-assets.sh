#!/usr/bin/env bash
# Fetches the pinned GraphiQL, React and ReactDOM browser builds from the npm registry
# (npm checks each tarball against the registry's integrity hash) into assets/vendor/,
# with their licences and a SHA256SUMS file. Run it only to change a version; its output
# is committed, so `cargo build` never needs npm or the network.
set -euo pipefail
cd "$(dirname "$0")/.."

GRAPHIQL=3.8.3   # the last major with a UMD build (4+ are ES modules around Monaco)
REACT=18.3.1     # React 19 ships no UMD build

out=assets/vendor
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

(cd "$work" && npm pack --silent "graphiql@$GRAPHIQL" "react@$REACT" "react-dom@$REACT" >/dev/null)
for tarball in "$work"/*.tgz; do
  name=$(basename "$tarball" .tgz)
  mkdir -p "$work/$name"
  tar -xzf "$tarball" -C "$work/$name"
done

rm -rf "$out"
mkdir -p "$out"
cp "$work/graphiql-$GRAPHIQL/package/graphiql.min.js" "$out/graphiql.min.js"
cp "$work/graphiql-$GRAPHIQL/package/graphiql.min.css" "$out/graphiql.min.css"
cp "$work/graphiql-$GRAPHIQL/package/LICENSE" "$out/LICENSE.graphiql"
cp "$work/react-$REACT/package/umd/react.production.min.js" "$out/react.production.min.js"
cp "$work/react-$REACT/package/LICENSE" "$out/LICENSE.react"
cp "$work/react-dom-$REACT/package/umd/react-dom.production.min.js" "$out/react-dom.production.min.js"
cp "$work/react-dom-$REACT/package/LICENSE" "$out/LICENSE.react-dom"
# The bundles end with a source-map comment; the maps are not shipped, so drop it
# rather than have browsers' developer tools ask for a file that is not there.
for file in "$out"/*.js "$out"/*.css; do
  sed -i -e 's|//# sourceMappingURL=.*$||' -e 's|/\*# sourceMappingURL=.*\*/||' "$file"
done
cat > "$out/VERSIONS" <<VERSIONS
graphiql $GRAPHIQL
react $REACT
react-dom $REACT
VERSIONS
(cd "$out" && sha256sum ./*.js ./*.css > SHA256SUMS)
echo "vendored into $out:"
cat "$out/VERSIONS"
