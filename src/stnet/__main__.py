from stnet.cli import main

raise SystemExit(main())
