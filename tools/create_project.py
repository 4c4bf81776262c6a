"""Write a new task project from tools/templates/project: a folder that trains at once.

    python tools/create_project.py NAME --routing-token "[XYZ]" [--out-dir projects]

The folder (``<out-dir>/NAME``) has the plugin shape of docs/plugins.md: a decoder skeleton
with a working trivial loss, an adapter of a documented JSON format, a metric, a tiny
config, a README saying what to replace, and a test that passes as generated. The tools run
from the folder that holds ``<out-dir>`` and import the project as ``<out-dir name>.NAME``.
The config's ``_base_`` (vlm2's tiny recipe) is written relative to the config when the
project is inside this repository, and as an absolute path when it is outside.
"""
import argparse
import os
import os.path as osp
import re
import sys
from string import Template

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
TEMPLATES = osp.join(ROOT, 'tools', 'templates', 'project')
BASE = osp.join(ROOT, 'configs', 'visionllmv2', 'visionllmv2_tiny_shapes.py')
NAME = re.compile(r'^[a-z][a-z0-9_]*$')
TOKEN = re.compile(r'^\[[A-Z][A-Z0-9_]*\]$')  # as vlm2.models.super_link.ROUTING_TOKEN


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Create a vlm2 task project')
    parser.add_argument('name', help='the project (and task family) name, e.g. counting')
    parser.add_argument('--routing-token', required=True, help='its routing token, e.g. "[CNT]"')
    parser.add_argument('--out-dir', default='projects',
                        help='the folder of projects (a Python package name); default projects')
    return parser.parse_args(argv)


def _path_from(folder: str, target: str) -> str:
    """``target`` relative to ``folder`` inside this repository, else absolute."""
    inside = osp.commonpath([ROOT, osp.abspath(folder)]) == ROOT
    return osp.relpath(target, folder) if inside else target


def create_project(name: str, token: str, out_dir: str = 'projects') -> str:
    """Write the project folder and return its path; refuses to overwrite one."""
    if not NAME.match(name):
        raise ValueError(f'project name {name!r}: use lower case letters, digits and _')
    if not TOKEN.match(token) or token == '[EMB]':
        raise ValueError(f'--routing-token {token!r}: upper case in brackets, e.g. "[XYZ]"')
    projects = osp.basename(osp.normpath(out_dir))
    if not NAME.match(projects):
        raise ValueError(f'--out-dir {out_dir!r}: its name must be a Python package name')
    target = osp.join(out_dir, name)
    if osp.exists(target):
        raise FileExistsError(f'{target} exists; pick another name or remove it')
    configs = osp.join(target, 'configs')
    values = dict(
        name=name, token=token, projects=projects, package=f'{projects}.{name}',
        Camel=''.join(part.capitalize() for part in name.split('_')),
        base=_path_from(configs, BASE),
        config=f'{projects}/{name}/configs/{name}_tiny.py',
        docs=_path_from(target, osp.join(ROOT, 'docs', 'adding_a_task.md')),
        plugins=_path_from(target, osp.join(ROOT, 'docs', 'plugins.md')))
    for folder, _, files in os.walk(TEMPLATES):
        for file in sorted(f for f in files if f.endswith('.tmpl')):
            rel = osp.relpath(osp.join(folder, file), TEMPLATES)[:-len('.tmpl')]
            rel = rel.replace('tiny.py', f'{name}_tiny.py').replace('test_name', f'test_{name}')
            with open(osp.join(folder, file)) as f:
                text = Template(f.read()).substitute(values)
            os.makedirs(osp.dirname(osp.join(target, rel)), exist_ok=True)
            with open(osp.join(target, rel), 'w') as f:
                f.write(text)
    init = osp.join(out_dir, '__init__.py')  # a regular package, found first from the cwd
    if not osp.exists(init):
        with open(init, 'w') as f:
            f.write('"""Task projects (tools/create_project.py)."""\n')
    return target


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        target = create_project(args.name, args.routing_token, args.out_dir)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'create_project: {e}')
    print(f'wrote {target}/ (see its README.md). From {osp.abspath(osp.dirname(target) + "/..")}:\n'
          f'  python {ROOT}/tools/train.py {args.out_dir}/{args.name}/configs/'
          f'{args.name}_tiny.py --work-dir work_dirs/{args.name}\n'
          f'  python -m pytest {args.out_dir}/{args.name}/tests')

if __name__ == '__main__':
    main()
