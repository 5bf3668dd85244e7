from torchenv.cli import main

raise SystemExit(main())
