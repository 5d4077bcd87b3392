#!/bin/sh
echo "hello from a component built by artifact storage"
