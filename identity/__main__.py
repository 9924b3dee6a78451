from identity.cli import main

raise SystemExit(main())
