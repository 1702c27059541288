package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Bounds on the configuration file, checked in one pass over its YAML
// nodes before viper reads it, because viper's cost is not linear in the
// file's size:
//
//   - viper flattens nested maps into dotted keys and looks every key up by
//     every prefix of its path, so a key d maps down costs about d² steps
//     and a chain of maps d deep d³: 2,000 deep took 23 s, a 15 KB file
//     with a 2,000-deep `not` rule 69 s, and a 1 MiB file of keys 60 maps
//     down 63 s, in serve, config check and every reload alike;
//   - the YAML decoder checks each key of a map against the ones before
//     it: 100,000 keys in one map took 39 s.
//
// The deepest key of config.example.yaml is 6 levels down and a
// hand-written rule (all/any/not) rarely passes 10, so 64 levels leave
// room for any real rule; its largest map has under 40 keys, so 256 per
// map. The d² steps of a real configuration add up to a few hundred (a
// 64-deep rule: 89,000); at 10⁶ viper takes about a third of a second.
// config.example.yaml, commented, is 40 KiB; 1 MiB holds thousands of
// domains.
const (
	maxConfigBytes   = 1 << 20
	maxConfigDepth   = 64
	maxConfigMapKeys = 256
	maxConfigSteps   = 1_000_000
)

// readBoundedConfig reads at most maxConfigBytes of YAML from r and checks
// it against the other bounds; errors name the file and the key path.
func readBoundedConfig(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxConfigBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(b) > maxConfigBytes {
		return nil, fmt.Errorf("%s: larger than %d bytes (1 MiB), the most a configuration may be", name, maxConfigBytes)
	}
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) { // an empty file: the defaults
			return b, nil
		}
		return nil, fmt.Errorf("%s: not valid YAML: %w", name, err)
	}
	w := boundsWalk{}
	for _, n := range doc.Content {
		if err := w.walk(n, 1, true); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
	}
	return b, nil
}

// boundsWalk visits the nodes of a YAML document depth first, following
// aliases as viper's decoding expands them, and stops at the first bound
// passed.
type boundsWalk struct {
	path   []string // keys and [index]es down to the node visited
	steps  int      // viper's d² per key, for keys reached through maps only
	visits int      // nodes visited: aliases can multiply them
}

// walk checks n, the level-th map or list down when it is one; mapsOnly
// says whether only maps lead to it, as viper flattens them.
func (w *boundsWalk) walk(n *yaml.Node, level int, mapsOnly bool) error {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if w.visits++; w.visits > maxConfigBytes {
		// Without aliases a file of maxConfigBytes has fewer nodes.
		return fmt.Errorf("%s: aliases expand to more than %d nodes", w.keyPath(), maxConfigBytes)
	}
	if (n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode) && level > maxConfigDepth {
		return fmt.Errorf("%s: nested deeper than %d levels, the most a configuration may be", w.keyPath(), maxConfigDepth)
	}
	switch n.Kind {
	case yaml.MappingNode:
		if k := len(n.Content) / 2; k > maxConfigMapKeys {
			return fmt.Errorf("%s: %d keys in one map, more than the %d a configuration may have", w.keyPath(), k, maxConfigMapKeys)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			w.path = append(w.path, n.Content[i].Value)
			if mapsOnly {
				if w.steps += level * level; w.steps > maxConfigSteps {
					return fmt.Errorf("%s: too many keys nested too deep (each key d maps down counts d², at most %d in all)", w.keyPath(), maxConfigSteps)
				}
			}
			if err := w.walk(n.Content[i+1], level+1, mapsOnly); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			w.path = append(w.path, "["+strconv.Itoa(i)+"]")
			if err := w.walk(c, level+1, false); err != nil {
				return err
			}
			w.path = w.path[:len(w.path)-1]
		}
	}
	return nil
}

// keyPath writes the path as dotted keys, a run of one key as key×n:
// policy.account_enabled.not×62; "the top level" for the empty path.
func (w *boundsWalk) keyPath() string {
	path := w.path
	if len(path) == 0 {
		return "the top level"
	}
	var b strings.Builder
	for i := 0; i < len(path); {
		j := i
		for j < len(path) && path[j] == path[i] {
			j++
		}
		for k := 0; k < min(j-i, 2); k++ {
			if b.Len() > 0 && !strings.HasPrefix(path[i], "[") {
				b.WriteByte('.')
			}
			b.WriteString(path[i])
			if j-i > 2 {
				fmt.Fprintf(&b, "×%d", j-i)
				break
			}
		}
		i = j
	}
	return b.String()
}
