package protocols

import (
	"bytes"
	"encoding/xml"
	"strings"
)

// docEncoder is an indenting xml.Encoder with the buffer it writes to,
// kept from one answer to the next (renderCache.encoders): a fresh
// encoder allocated a 4 KiB buffered writer, and the document's buffer
// grew several times, for every answer rendered — more than the answer
// itself, on every directory miss.
type docEncoder struct {
	buf bytes.Buffer
	enc *xml.Encoder
}

// maxPooledDoc bounds the buffer an encoder keeps; a larger document's
// encoder is dropped.
const maxPooledDoc = 64 << 10

// xmlDeclaration is xml.Header without its newline, which the encoder
// writes before the document's element (see newDocEncoder).
var xmlDeclaration = strings.TrimSuffix(xml.Header, "\n")

func newDocEncoder() *docEncoder {
	e := &docEncoder{}
	e.enc = xml.NewEncoder(&e.buf)
	e.enc.Indent("", "  ")
	// An indenting encoder begins its first element without a newline and
	// every later one with one. An element encoded and thrown away here
	// makes every document the same: the newline after the declaration is
	// the encoder's.
	_ = e.enc.Encode(struct {
		XMLName xml.Name `xml:"x"`
	}{})
	return e
}

// encode returns what encodeXMLDoc(v) returns. The bytes are the
// encoder's: valid until its next encode. After an error the encoder's
// state is unknown: drop it.
func (e *docEncoder) encode(v any) ([]byte, error) {
	e.buf.Reset()
	e.buf.WriteString(xmlDeclaration)
	if err := e.enc.Encode(v); err != nil {
		return nil, err
	}
	e.buf.WriteByte('\n')
	return e.buf.Bytes(), nil
}
