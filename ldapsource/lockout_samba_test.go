package ldapsource_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailbeacon/mailbeacon/ldapsource"
	"github.com/mailbeacon/mailbeacon/ldapsource/sambatest"
)

// A user's bind refused for a wrong password is ErrInvalidCredentials
// alone; refused because the account is locked out (AD 775), even with
// the right password, it is also ErrAccountRestricted: policy then does
// not remember the password as wrong.
func TestUserBindLockoutRestrictedSamba(t *testing.T) {
	srv := sambatest.DC(t)
	srv.SetLockoutPolicy(t, 2, 30*time.Minute)
	src := adSource(t, adConfig(srv, srv.LDAPSURL, false, sambatest.ServiceUPN))
	ctx := context.Background()
	dn := sambatest.UserDN("ivan")
	err := src.Authenticate(ctx, dn, "wrong")
	if !errors.Is(err, ldapsource.ErrInvalidCredentials) || errors.Is(err, ldapsource.ErrAccountRestricted) {
		t.Fatalf("wrong password: %v, want ErrInvalidCredentials only", err)
	}
	_ = src.Authenticate(ctx, dn, "wrong again")
	if _, locked := srv.Lockout(t, dn); !locked {
		t.Fatal("ivan is not locked after two wrong passwords")
	}
	err = src.Authenticate(ctx, dn, sambatest.UserPassword)
	if !errors.Is(err, ldapsource.ErrInvalidCredentials) || !errors.Is(err, ldapsource.ErrAccountRestricted) {
		t.Errorf("right password, locked account: %v, want ErrInvalidCredentials and ErrAccountRestricted", err)
	}
}
