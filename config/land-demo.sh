#!/bin/sh
# Makes the throwaway repository config/land.toml lands changes on: a fresh git
# repository at $1 (removed first if it is there), with a README, a version
# file and the small test its CI runs. `make demo-land` calls it.
set -eu
repo="$1"
rm -rf "$repo"
mkdir -p "$repo"
cd "$repo"
git init -q -b main
git config user.name "fleetdeck demo"
git config user.email "demo@fleetdeck.invalid"
git config commit.gpgsign false
printf '# A throwaway repository for the landing demo\n' > README.md
printf '1.0\n' > VERSION
cat > check.sh <<'TEST'
#!/bin/sh
# The demo's test suite: every text file has content, VERSION has one line per bump.
for file in *.txt; do
    [ -e "$file" ] || continue
    [ -s "$file" ] || { echo "empty: $file"; exit 1; }
done
grep -q '^1\.' VERSION || { echo "bad VERSION"; exit 1; }
echo "ok: $(ls | wc -l) files"
TEST
git add -A
git commit -q -m "The demo repository"
