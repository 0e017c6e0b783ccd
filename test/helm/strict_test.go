package helm

import (
	"errors"
	"fmt"

	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// unmarshalStrict decodes YAML the way the API server's strict field
// validation does: case-sensitive field names, no unknown or duplicate
// fields. (encoding/json, under sigs.k8s.io/yaml.UnmarshalStrict, matches
// field names case-insensitively, so "metrictype" would pass there.)
func unmarshalStrict(doc []byte, into any) error {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return fmt.Errorf("yaml: %w", err)
	}
	strictErrs, err := kjson.UnmarshalStrict(j, into)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}
