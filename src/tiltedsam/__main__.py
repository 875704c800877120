from tiltedsam.cli import main

raise SystemExit(main())
