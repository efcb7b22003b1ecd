package notify

import (
	"os"
	"testing"

	"github.com/guardrun/guardrun/internal/testchild"
)

func TestMain(m *testing.M) {
	testchild.MaybeRun() // the hook test supervises a real child
	os.Exit(m.Run())
}
