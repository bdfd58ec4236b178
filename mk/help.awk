# `make help`: the targets (`target: ... ## what it does`) grouped under the `##@ Group [title] | variables` line
# that precedes them in their make file, groups in the order of `order` (then as they appear), each with the
# variables its `##@` lines name. Target lines stay `target<TAB>text` (tests read them).
FNR == 1 { group = "Other" }
/^##@ / {
	line = substr($0, 5); vars = ""
	if (index(line, " | ")) { vars = substr(line, index(line, " | ") + 3); line = substr(line, 1, index(line, " | ") - 1) }
	split(line, w, " "); group = w[1]; sub(/[:,]$/, "", group)
	if (!(group in title)) seen[++n] = group
	if (length(line) > length(title[group])) title[group] = line
	if (vars != "") varlist[group] = varlist[group] (varlist[group] == "" ? "" : "; ") vars
	next
}
/^[a-zA-Z0-9_-]+:.*## / {
	t = $0; sub(/:.*/, "", t); d = $0; sub(/^[^#]*## /, "", d); gsub(/\$\(EXP\)/, "<EXP>", d)
	if (!(group in title)) { title[group] = group; seen[++n] = group }
	targets[group] = targets[group] t "\t" d "\n"
}
END {
	k = split(order, o, " "); m = 0
	for (i = 1; i <= k; i++) if (o[i] in title) out[++m] = o[i]
	for (i = 1; i <= n; i++) { found = 0; for (j = 1; j <= m; j++) if (out[j] == seen[i]) found = 1; if (!found) out[++m] = seen[i] }
	for (i = 1; i <= m; i++) {
		g = out[i]
		printf "%s%s\n", (i > 1 ? "\n" : ""), title[g]
		if (varlist[g] != "") wrap("  variables: ", varlist[g])
		printf "%s", targets[g]
	}
}

# print `text` after `head`, cut at ", " / "; " into lines of at most 112 characters
function wrap(head, text,   out, parts, i, k, piece) {
	out = head; k = split(text, parts, ", ")
	for (i = 1; i <= k; i++) {
		piece = parts[i] (i < k ? "," : "")
		if (length(out) + length(piece) + 1 > 112 && out != head) { print out; out = "             " piece }
		else out = out (out == head ? "" : " ") piece
	}
	print out
}
