from egw.cli import main

raise SystemExit(main())
